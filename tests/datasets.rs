//! Datasets in the formats face recognition is distributed in, made here
//! from the bundled photos: a RecordIO set (insightface's `train.rec`,
//! `train.idx`, `property`) reads back exactly and trains like the same
//! photos as a folder; a verification set (`lfw.bin`'s pickle) scores like
//! the same pairs given as CSV.

mod common;
use arcface::data::container;
use arcface::data::dataset::Dataset;
use arcface::data::recordio::DatasetWriter;
use arcface::data::verification_bin;
use arcface::models::{Arch, Head, ModelSpec};
use arcface::pipeline::train::{self, TrainConfig};
use arcface::progress::Progress;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arcface-datasets-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The first `people` ORL people, as a folder dataset.
fn orl(people: usize) -> Dataset {
    Dataset::scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/orl"), false).unwrap().first_people(people)
}

/// `data`'s photos, their files' bytes as they are, as a RecordIO set in
/// `dir` (with `names.txt`).
fn write_records(data: &Dataset, dir: &Path) -> PathBuf {
    let rec = dir.join("train.rec");
    let mut w = DatasetWriter::create(&rec).unwrap();
    for s in &data.samples {
        w.push(s.label as u32, std::fs::read(&s.path).unwrap()).unwrap();
    }
    assert_eq!(w.finish((112, 92)).unwrap(), data.samples.len() as u64);
    std::fs::write(dir.join("names.txt"), data.people.join("\n")).unwrap();
    rec
}

#[test]
fn a_recordio_set_reads_back_exactly_and_trains_like_its_folder() {
    let gpu = common::gpu();
    let folder = orl(3);
    let dir = tmpdir("rec");
    let rec = write_records(&folder, &dir);
    assert_eq!(std::fs::read_to_string(dir.join("property")).unwrap(), "3,112,92\n");
    for root in [&dir, &rec] {
        let back = Dataset::scan(root, true).unwrap();
        assert_eq!(back.people, folder.people, "named by names.txt");
        assert!(back.skipped.is_empty());
        assert_eq!(back.samples.len(), folder.samples.len());
        for (r, f) in back.samples.iter().zip(&folder.samples) {
            assert_eq!(r.label, f.label);
            let bytes = container::read(&r.path).expect("an address").unwrap();
            assert_eq!(bytes, std::fs::read(&f.path).unwrap(), "{}", r.path.display());
        }
    }
    // Named on a command line (enroll), the set is its people.
    let named = Dataset::from_paths(&[dir.clone()]).unwrap();
    assert_eq!((named.people.clone(), named.samples.len()), (folder.people.clone(), folder.samples.len()));
    // Without names.txt, people are named by their labels.
    std::fs::remove_file(dir.join("names.txt")).unwrap();
    assert_eq!(Dataset::scan(&dir, false).unwrap().people, ["0", "1", "2"]);

    let cfg = |loader_threads| TrainConfig { loader_threads, ..common::mini_config(1, 0.01) };
    let (a, b) = (dir.join("run-folder"), dir.join("run-rec"));
    let orl_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/orl");
    let from_folder = train::run(&gpu, &orl_root, &a, cfg(1), false, &Progress::hidden()).unwrap();
    let from_records = train::run(&gpu, &rec, &b, cfg(2), false, &Progress::hidden()).unwrap();
    // The same split (each part's labels and images, in order), the same steps.
    let parts = |run: &Path| {
        let (s, _) = arcface::data::split::Split::read_csv(&run.join(train::SPLIT)).unwrap();
        let bytes = |p: &Path| container::read(p).map_or_else(|| std::fs::read(p).unwrap(), |r| r.unwrap());
        let key = |v: &[arcface::data::dataset::Sample]| -> Vec<(usize, Vec<u8>)> {
            v.iter().map(|x| (x.label, bytes(&x.path))).collect()
        };
        (key(&s.train), key(&s.val), key(&s.test))
    };
    assert_eq!(parts(&a), parts(&b));
    assert_eq!(from_folder.metrics[0].train_loss, from_records.metrics[0].train_loss);
    assert_eq!(from_folder.metrics[0].val_loss, from_records.metrics[0].val_loss);
    assert_eq!(common::weights(&a.join(train::LAST)), common::weights(&b.join(train::LAST)));
    // eval finds the test records in the set, also when it has moved.
    let r = arcface::pipeline::evaluate::run(&gpu, &b.join(train::BEST), None, false).unwrap();
    let moved = dir.join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    for f in ["train.rec", "train.idx"] {
        std::fs::copy(dir.join(f), moved.join(f)).unwrap();
    }
    let r2 = arcface::pipeline::evaluate::run(&gpu, &b.join(train::BEST), Some(&moved), false).unwrap();
    assert_eq!((r.images, r.accuracy), (r2.images, r2.accuracy));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_broken_record_is_reported_and_skipped() {
    let folder = orl(2);
    let dir = tmpdir("broken");
    let rec = write_records(&folder, &dir);
    // Record 3's image cut to garbage: its header still reads, its image not.
    let idx = std::fs::read_to_string(dir.join("train.idx")).unwrap();
    let at: usize = idx.lines().find(|l| l.starts_with("3\t")).unwrap().split('\t').nth(1).unwrap().parse().unwrap();
    let mut bytes = std::fs::read(&rec).unwrap();
    for b in &mut bytes[at + 8 + 24..at + 8 + 24 + 16] {
        *b = 0x42;
    }
    // Record 5's magic word broken: its header cannot be read.
    let at5: usize = idx.lines().find(|l| l.starts_with("5\t")).unwrap().split('\t').nth(1).unwrap().parse().unwrap();
    bytes[at5] ^= 0xff;
    std::fs::write(&rec, &bytes).unwrap();
    let data = Dataset::scan(&dir, false).unwrap();
    assert_eq!(data.samples.len(), folder.samples.len() - 1);
    assert_eq!(data.skipped.len(), 1);
    assert!(data.skipped[0].reason.contains("no record at byte"), "{}", data.skipped[0].reason);
    assert!(data.skipped[0].path.to_string_lossy().ends_with("train.rec#5"));
    let e = format!("{:#}", arcface::data::input::open_rgb(&container::image_path(&rec, 3)).unwrap_err());
    assert!(e.contains("train.rec#3") && e.contains("not a readable image"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arcface")).args(args).output().unwrap()
}

#[test]
fn eval_pairs_on_a_verification_set_equals_the_same_pairs_as_csv() {
    let dir = tmpdir("bin");
    // An untrained MobileFaceNet: any fixed embedding compares the two.
    let mut b = arcface::nn::CpuBackend;
    let spec = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 2, head: Head::ArcFace { s: 32.0, m: 0.5 } };
    let net = arcface::models::Net::init(&mut b, spec, 1).unwrap();
    let ckpt = dir.join("m.safetensors");
    let meta = arcface::io::checkpoint::CheckpointMeta::new(spec, vec!["a".into(), "b".into()]);
    arcface::io::checkpoint::save(&ckpt, &mut b, &net, &meta).unwrap();
    // Twelve pairs of ORL photos, same and different in turn.
    let folder = orl(4);
    let mut files = Vec::new();
    let mut same = Vec::new();
    let mut csv = String::from("a,b,same\n");
    for i in 0..12 {
        let a = &folder.samples[i * 3 % folder.samples.len()];
        let b = &folder.samples[(i * 7 + if i % 2 == 0 { 1 } else { 13 }) % folder.samples.len()];
        files.push(std::fs::read(&a.path).unwrap());
        files.push(std::fs::read(&b.path).unwrap());
        same.push(a.label == b.label);
        csv += &format!("{},{},{}\n", a.path.display(), b.path.display(), u8::from(a.label == b.label));
    }
    assert!(same.iter().any(|&s| s) && same.iter().any(|&s| !s));
    let bin = dir.join("pairs.bin");
    std::fs::write(&bin, verification_bin::write(&files, &same)).unwrap();
    std::fs::write(dir.join("pairs.csv"), csv).unwrap();
    let run = |how: &[&str]| -> serde_json::Value {
        let ck = ckpt.to_str().unwrap();
        let roc = dir.join("roc.png");
        let mut args = vec!["eval-pairs", "--checkpoint", ck, "--json", "--roc", roc.to_str().unwrap()];
        args.extend(how);
        let out = cli(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_object_mut().unwrap().remove("worst");
        v
    };
    let from_bin = run(&["--bin", bin.to_str().unwrap()]);
    let from_csv = run(&["--pairs", dir.join("pairs.csv").to_str().unwrap(), "--no-align"]);
    assert_eq!(from_bin, from_csv);
    // The same set pickled by Python itself (protocol 4, as insightface's
    // scripts write with HIGHEST_PROTOCOL: frames, memo entries, an image
    // object in two pairs fetched back from the memo).
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(python.is_file(), "{} missing: run scripts/setup --tests", python.display());
    let script = "import pickle, sys\n\
                  read = {}\n\
                  bins = [read.setdefault(p, open(p, 'rb').read()) for p in sys.argv[3:]]\n\
                  assert len(read) < len(bins)\n\
                  same = [c == '1' for c in sys.argv[2]]\n\
                  pickle.dump((bins, same), open(sys.argv[1], 'wb'), protocol=4)\n";
    let py_bin = dir.join("python.bin");
    let flags: String = same.iter().map(|&s| if s { '1' } else { '0' }).collect();
    let mut args = vec!["-c".to_string(), script.to_string(), py_bin.display().to_string(), flags];
    let csv_rows = std::fs::read_to_string(dir.join("pairs.csv")).unwrap();
    for row in csv_rows.lines().skip(1) {
        args.extend(row.split(',').take(2).map(String::from));
    }
    let out = Command::new(&python).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(run(&["--bin", py_bin.to_str().unwrap()]), from_bin);
    assert_eq!(from_bin["pairs"], 12);
    assert!(from_bin["insightface_accuracy"].as_f64().is_some());
    // Anything but a verification set is refused, naming the file.
    std::fs::write(&bin, b"\x80\x02cnumpy\nndarray\n.").unwrap();
    let out = cli(&["eval-pairs", "--checkpoint", ckpt.to_str().unwrap(), "--bin", bin.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("pairs.bin: not a verification set") && err.contains("Python class"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn val_bin_reports_each_epochs_verification_accuracy() {
    let gpu = common::gpu();
    let dir = tmpdir("valbin");
    // Six pairs of the first three ORL people.
    let folder = orl(3);
    let (mut files, mut same) = (Vec::new(), Vec::new());
    for i in 0..6 {
        let a = &folder.samples[i * 4];
        let b = &folder.samples[(i * 4 + if i % 2 == 0 { 1 } else { 11 }) % folder.samples.len()];
        files.extend([std::fs::read(&a.path).unwrap(), std::fs::read(&b.path).unwrap()]);
        same.push(a.label == b.label);
    }
    let bin = dir.join("orl_pairs.bin");
    std::fs::write(&bin, verification_bin::write(&files, &same)).unwrap();
    let mfn = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 0, head: Head::ArcFace { s: 8.0, m: 0.3 } };
    let cfg = TrainConfig { model: mfn, lr: 0.05, val_bins: vec![bin.clone()], ..common::mini_config(1, 0.05) };
    let run = dir.join("run");
    let orl_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/orl");
    let o = train::run(&gpu, &orl_root, &run, cfg.clone(), false, &Progress::hidden()).unwrap();
    let v = &o.metrics[0].verification;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].name, "orl_pairs");
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with("orl_pairs_accuracy,orl_pairs_accuracy_std"), "{csv}");
    assert!(std::fs::read_to_string(run.join("metrics.json")).unwrap().contains("\"verification\""));
    // The same figure as eval-pairs --bin on the epoch's checkpoint.
    let out = cli(&[
        "eval-pairs",
        "--checkpoint",
        run.join(train::LAST).to_str().unwrap(),
        "--bin",
        bin.to_str().unwrap(),
        "--json",
        "--roc",
        dir.join("roc.png").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["insightface_accuracy"].as_f64().unwrap(), v[0].accuracy);
    // A network without an embedding, or a file that is no set, is refused first.
    let mini = TrainConfig {
        model: ModelSpec { arch: Arch::MiniNet, input: 12, classes: 0, head: Head::Softmax },
        ..cfg.clone()
    };
    let e = train::run(&gpu, &orl_root, &dir.join("mini"), mini, false, &Progress::hidden()).err().unwrap();
    assert!(format!("{e:#}").contains("--val-bin"), "{e:#}");
    std::fs::write(dir.join("bad.bin"), b"not a pickle").unwrap();
    let bad = TrainConfig { val_bins: vec![dir.join("bad.bin")], ..cfg };
    let e = train::run(&gpu, &orl_root, &dir.join("bad"), bad, false, &Progress::hidden()).err().unwrap();
    assert!(format!("{e:#}").contains("bad.bin: not a verification set"), "{e:#}");
    assert!(!dir.join("bad").exists(), "nothing written");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_load_times_the_loader_on_a_recordio_set() {
    let folder = orl(3);
    let dir = tmpdir("bench-load");
    write_records(&folder, &dir);
    let out = cli(&[
        "bench",
        "load",
        "--data",
        dir.to_str().unwrap(),
        "--batch-size",
        "8",
        "--loader-threads",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["images"].as_u64(), r["failed"].as_u64(), r["threads"].as_u64()), (Some(30), Some(0), Some(2)));
    assert!(r["images_per_s"].as_f64().unwrap() > 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}
