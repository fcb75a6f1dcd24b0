//! The command line as a user runs it.

use std::process::Command;

fn arcface(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arcface")).args(args).output().unwrap()
}

#[test]
fn gradcheck_one_kernel_prints_a_table_and_succeeds() {
    let out = arcface(&["gradcheck", "--kernel", "sgd", "--seed", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("sgd") && stdout.contains("update velocity") && stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn gradcheck_json_is_machine_readable() {
    let out = arcface(&["gradcheck", "--kernel", "residual", "--json"]);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["pass"] == true && r["tol"]["atol"].is_number()));
}

#[test]
fn unknown_kernel_names_the_flag() {
    let out = arcface(&["gradcheck", "--kernel", "nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("--kernel") && stderr.contains("'nope'") && stderr.contains("conv2d"), "{stderr}");
}

#[test]
fn info_json_reports_the_adapter() {
    let out = arcface(&["info", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["name"].is_string() && r["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
    // Whether `--precision f16` can run here, as the device itself says.
    let gpu = arcface::gpu::Gpu::new().unwrap();
    assert_eq!(r["shader_f16"].as_bool(), Some(gpu.has_f16()), "{r}");
}

#[test]
fn bench_kernels_runs_a_small_case() {
    let out = arcface(&["bench", "kernels", "--kernel", "l2norm", "--batch", "4", "--repeats", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row["median_ms"].as_f64().unwrap() > 0.0));
}

mod infer {
    use super::arcface;
    use std::path::PathBuf;

    /// A fresh (untrained) MobileFaceNet checkpoint with two people.
    fn checkpoint(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("arcface-cli-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        (super::infer_checkpoint(&dir), dir)
    }

    fn face(name: &str) -> String {
        format!("{}/tests/fixtures/faces/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn predict_names_people_and_reports_bad_files_separately() {
        let (ckpt, dir) = checkpoint("predict");
        let text = dir.join("notes.png");
        std::fs::write(&text, "not an image").unwrap();
        let missing = dir.join("missing.jpg");
        let args = [
            "predict",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            &face("s1_1.pgm"),
            text.to_str().unwrap(),
            missing.to_str().unwrap(),
            &face("s2_1.pgm"),
            "--top",
            "2",
            "--json",
        ];
        let out = arcface(&args);
        assert_eq!(out.status.code(), Some(1), "a bad file makes the exit code non-zero");
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 4);
        for i in [0, 3] {
            let preds = rows[i]["predictions"].as_array().unwrap();
            assert_eq!(preds.len(), 2);
            let p: f64 = preds.iter().map(|p| p["probability"].as_f64().unwrap()).sum();
            assert!((p - 1.0).abs() < 1e-4 && ["alice", "bob"].contains(&preds[0]["person"].as_str().unwrap()));
        }
        assert!(rows[1]["error"].as_str().unwrap().contains("notes.png: not a readable image"));
        assert!(rows[2]["error"].as_str().unwrap().contains("missing.jpg: cannot read"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn embed_gives_unit_vectors() {
        let (ckpt, dir) = checkpoint("embed");
        let out = arcface(&["embed", "--checkpoint", ckpt.to_str().unwrap(), &face("s1_1.pgm"), "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let e: Vec<f64> = rows[0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(e.len(), 128);
        assert!((e.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Folders stand for the photos in them; `--csv` prints one row per
    /// photo; eval-pairs names its threshold and the pairs it gets most wrong.
    #[test]
    fn folders_csv_rows_and_the_worst_pairs() {
        let (ckpt, dir) = checkpoint("folders");
        let orl = format!("{}/data/orl", env!("CARGO_MANIFEST_DIR"));
        let (s1, s2) = (format!("{orl}/s1"), format!("{orl}/s2"));
        let out = arcface(&["predict", "--checkpoint", ckpt.to_str().unwrap(), &s1, &face("s2_1.pgm"), "--csv"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let csv = String::from_utf8_lossy(&out.stdout).to_string();
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows[0], "path,person,closest,probability,cosine,threshold,error");
        assert_eq!(rows.len(), 1 + 10 + 1, "{csv}");
        assert!(rows[1].contains("data/orl/s1/1.pgm,") && rows[2].contains("data/orl/s1/2.pgm,"), "{csv}");
        let out = arcface(&["embed", "--checkpoint", ckpt.to_str().unwrap(), &s2, "--csv"]);
        let csv = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(csv.lines().count(), 11, "{csv}");
        assert_eq!(csv.lines().next().unwrap().split(',').count(), 1 + 128 + 1);
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let out = arcface(&["embed", "--checkpoint", ckpt.to_str().unwrap(), empty.to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("no photos in this folder"));

        let pairs = dir.join("pairs");
        for (p, n) in [("s1", 3), ("s2", 3)] {
            std::fs::create_dir_all(pairs.join(p)).unwrap();
            for i in 1..=n {
                std::fs::copy(format!("{orl}/{p}/{i}.pgm"), pairs.join(p).join(format!("{i}.pgm"))).unwrap();
            }
        }
        let roc = dir.join("roc.png");
        let out = arcface(&[
            "eval-pairs",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--data",
            pairs.to_str().unwrap(),
            "--roc",
            roc.to_str().unwrap(),
            "--worst",
            "2",
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = m["threshold"].as_f64().unwrap();
        for fa in m["worst"]["false_accepts"].as_array().unwrap() {
            assert!(fa["score"].as_f64().unwrap() >= t && fa["a"].is_string(), "{m}");
        }
        let worst = m["worst"]["false_accepts"].as_array().unwrap().len()
            + m["worst"]["false_rejects"].as_array().unwrap().len();
        assert!(
            m["accuracy"].as_f64().unwrap() == 1.0 || worst > 0,
            "a threshold short of perfect has its worst pairs: {m}"
        );
        // verify takes that threshold and says where it came from.
        let json = dir.join("pairs.json");
        std::fs::write(&json, &out.stdout).unwrap();
        let out = arcface(&[
            "verify",
            &face("s1_1.pgm"),
            &face("s2_1.pgm"),
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--threshold-from",
            json.to_str().unwrap(),
        ]);
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(said.contains(&format!("threshold {t:.4}: the accuracy-maximising threshold of eval-pairs")), "{said}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_checkpoint_is_named() {
        let out = arcface(&["predict", "--checkpoint", "/nonexistent/c.safetensors", &face("s1_1.pgm")]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/c.safetensors: cannot read"));
    }

    #[test]
    fn info_model_prints_the_papers_numbers() {
        let out = arcface(&["info", "--model", "mobilefacenet", "--json"]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["parameters"], 1_003_136 + 10 * 128);
        let out = arcface(&["info", "--model", "mininet", "--input", "16", "--classes", "10", "--json"]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["parameters"], 32 * 27 + 32 + 64 * 288 + 64 + 128 * 576 + 128 + 10 * 32768 + 10);
    }
}

mod detection {
    use super::arcface;
    use std::path::{Path, PathBuf};

    fn london(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/london").join(rel)
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("arcface-cli-det-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn detect_prints_json_and_draws() {
        let d = tmp("detect");
        let blank = d.join("blank.png");
        image::RgbImage::from_pixel(120, 90, image::Rgb([200, 200, 200])).save(&blank).unwrap();
        let draw = d.join("drawn");
        let photo = london("003/neutral.jpg");
        let out = arcface(&[
            "detect",
            photo.to_str().unwrap(),
            blank.to_str().unwrap(),
            "--json",
            "--draw",
            draw.to_str().unwrap(),
            "--thresholds",
            "0.6,0.7,0.7",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let faces = rows[0]["faces"].as_array().unwrap();
        assert_eq!(faces.len(), 1);
        assert_eq!(faces[0]["box"].as_array().unwrap().len(), 4);
        assert_eq!(faces[0]["landmarks"].as_array().unwrap().len(), 5);
        assert!(faces[0]["prob"].as_f64().unwrap() > 0.9);
        assert_eq!(rows[1]["faces"].as_array().unwrap().len(), 0, "a blank image has no face");
        let drawn: Vec<_> = std::fs::read_dir(&draw).unwrap().collect();
        assert_eq!(drawn.len(), 2, "one drawing per photo");
        // Green box pixels where the face was found.
        let first = image::open(draw.join("0000_neutral.png")).unwrap().to_rgb8();
        let b: Vec<f64> = faces[0]["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(first.get_pixel(((b[0] + b[2]) / 2.0) as u32, b[1].round() as u32).0, [0, 255, 0]);
    }

    #[test]
    fn prepare_aligns_reports_and_predict_aligns_on_the_fly() {
        let d = tmp("prepare");
        let raw = d.join("raw");
        for (person, photo) in [("ann", "001/neutral.jpg"), ("ann", "001/smiling.jpg"), ("bob", "002/neutral.jpg")] {
            std::fs::create_dir_all(raw.join(person)).unwrap();
            std::fs::copy(london(photo), raw.join(person).join(photo.replace('/', "_"))).unwrap();
        }
        // No face, two faces side by side, and not an image.
        image::RgbImage::from_pixel(100, 100, image::Rgb([30, 30, 30])).save(raw.join("bob/wall.png")).unwrap();
        let a = image::open(london("003/neutral.jpg")).unwrap().to_rgb8();
        let b = image::imageops::resize(
            &image::open(london("004/neutral.jpg")).unwrap().to_rgb8(),
            200,
            200,
            image::imageops::FilterType::Triangle,
        );
        let mut pair = image::RgbImage::from_pixel(520, 300, image::Rgb([128, 128, 128]));
        image::imageops::overlay(&mut pair, &a, 0, 0);
        image::imageops::overlay(&mut pair, &b, 310, 50);
        pair.save(raw.join("bob/pair.png")).unwrap();
        std::fs::write(raw.join("bob/notes.jpg"), "text").unwrap();
        let out_dir = d.join("aligned");
        let out = arcface(&["prepare", raw.to_str().unwrap(), out_dir.to_str().unwrap(), "--quiet"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no face found, skipped") && err.contains("wall.png"), "{err}");
        assert!(err.contains("2 faces, the largest kept") && err.contains("pair.png"), "{err}");
        assert!(err.contains("notes.jpg"), "{err}");
        let labels = std::fs::read_to_string(out_dir.join("labels.csv")).unwrap();
        assert_eq!(labels.lines().count(), 1 + 4, "{labels}");
        assert!(labels.contains("ann/001_smiling.png,ann,0") && labels.contains("bob/pair.png,bob,1"), "{labels}");
        let crop = image::open(out_dir.join("ann/001_neutral.png")).unwrap();
        assert_eq!((crop.width(), crop.height()), (112, 112));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("prepare_report.json")).unwrap()).unwrap();
        assert_eq!(report["written"], 4);
        // The same crops as one RecordIO set, read back as a dataset.
        let rec_dir = d.join("rec");
        let out = arcface(&["prepare", raw.to_str().unwrap(), rec_dir.to_str().unwrap(), "--format", "rec", "--quiet"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let labels = std::fs::read_to_string(rec_dir.join("labels.csv")).unwrap();
        assert!(labels.contains("train.rec#1,ann,0") && labels.contains("train.rec#4,bob,1"), "{labels}");
        assert_eq!(std::fs::read_to_string(rec_dir.join("property")).unwrap(), "2,112,112\n");
        let set = arcface::data::dataset::Dataset::scan(&rec_dir, true).unwrap();
        assert_eq!((set.people.clone(), set.samples.len()), (vec!["ann".to_string(), "bob".into()], 4));
        let first = arcface::data::input::open_rgb(&set.samples[0].path).unwrap();
        assert_eq!(first, crop.to_rgb8(), "the record holds the crop the PNG does");

        // predict --align on whole photos: a photo without a face is an error for that file only.
        let ckpt = super::infer_checkpoint(&d);
        let wall = raw.join("bob/wall.png");
        let photo = london("005/neutral.jpg");
        let out = arcface(&[
            "predict",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--align",
            photo.to_str().unwrap(),
            wall.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(1));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows[0]["predictions"].as_array().unwrap().len(), 2);
        assert!(rows[1]["error"].as_str().unwrap().contains("wall.png: no face found"), "{rows}");
    }

    /// `sweep --align` detects and aligns the photos once, into OUT/aligned,
    /// and every run trains on those crops (the split it keeps lists them).
    #[test]
    fn sweep_align_trains_on_the_aligned_crops() {
        let d = tmp("sweep-align");
        let raw = d.join("raw");
        for (person, id) in [("ann", "001"), ("bob", "002")] {
            std::fs::create_dir_all(raw.join(person)).unwrap();
            for face in ["neutral", "smiling"] {
                let photo = image::open(london(&format!("{id}/{face}.jpg"))).unwrap();
                photo.save(raw.join(person).join(format!("{face}.png"))).unwrap();
                image::imageops::flip_horizontal(&photo)
                    .save(raw.join(person).join(format!("{face}_mirrored.png")))
                    .unwrap();
            }
        }
        let out_dir = d.join("sweep");
        let (raw_s, out_s) = (raw.to_str().unwrap(), out_dir.to_str().unwrap());
        let out = arcface(&[
            "sweep",
            "--data",
            raw_s,
            "--align",
            "--model",
            "mininet",
            "--input",
            "16",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--lrs",
            "1e-3",
            "--momentums",
            "0.9",
            "--out",
            out_s,
            "--quiet",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let labels = std::fs::read_to_string(out_dir.join("aligned/labels.csv")).unwrap();
        assert_eq!(labels.lines().count(), 1 + 8, "{labels}");
        let split = std::fs::read_to_string(out_dir.join("split.csv")).unwrap();
        let paths: Vec<&str> = split.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
        assert_eq!(paths.len(), 8, "{split}");
        let aligned = out_dir.join("aligned");
        assert!(paths.iter().all(|p| Path::new(p).starts_with(&aligned)), "trained on {paths:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// A fresh two-person MobileFaceNet checkpoint in `dir`.
fn infer_checkpoint(dir: &std::path::Path) -> std::path::PathBuf {
    seeded_checkpoint(dir, 1)
}

/// The same with weights drawn from `seed`, named after it.
fn seeded_checkpoint(dir: &std::path::Path, seed: u64) -> std::path::PathBuf {
    use ::arcface::io::checkpoint::{self, CheckpointMeta};
    use ::arcface::models::{Arch, Head, ModelSpec, Net};
    let gpu = ::arcface::gpu::Gpu::new().unwrap();
    let mut b = ::arcface::nn::GpuBackend::new(&gpu).unwrap();
    let spec = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 2, head: Head::ArcFace { s: 32.0, m: 0.5 } };
    let net = Net::init(&mut b, spec, seed).unwrap();
    let path = dir.join(if seed == 1 { "m.safetensors".to_string() } else { format!("m{seed}.safetensors") });
    checkpoint::save(&path, &mut b, &net, &CheckpointMeta::new(spec, vec!["alice".into(), "bob".into()])).unwrap();
    path
}

/// Output piped into a reader that stops early (`| head`) ends the command
/// quietly: no panic message, and on Unix the default end by SIGPIPE.
#[test]
fn a_closed_pipe_on_stdout_ends_quietly() {
    // The read end is closed before the command starts, so its first line
    // already meets a broken pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["info", "--model", "mobilefacenet"])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        const SIGPIPE: i32 = 13; // Linux and macOS
        assert_eq!(out.status.signal(), Some(SIGPIPE), "{:?}", out.status);
    }
}

/// `identify` refuses a checkpoint other than the one the gallery was
/// enrolled with, naming both, and takes the one it was enrolled with.
#[test]
fn identify_refuses_a_checkpoint_the_gallery_was_not_enrolled_with() {
    let d = std::env::temp_dir().join(format!("arcface-cli-gallery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let people = d.join("people");
    let orl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/orl");
    for person in ["s1", "s2"] {
        std::fs::create_dir_all(people.join(person)).unwrap();
        for i in 1..=2 {
            std::fs::copy(orl.join(format!("{person}/{i}.pgm")), people.join(format!("{person}/{i}.pgm"))).unwrap();
        }
    }
    let (enrolled, other) = (seeded_checkpoint(&d, 1), seeded_checkpoint(&d, 2));
    let gallery = d.join("gallery.safetensors");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let out = arcface(&["enroll", &s(&people), "--checkpoint", &s(&enrolled), "--out", &s(&gallery)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let probe = s(&people.join("s1/1.pgm"));
    let out = arcface(&["identify", &probe, "--gallery", &s(&gallery), "--checkpoint", &s(&enrolled)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = arcface(&["identify", &probe, "--gallery", &s(&gallery), "--checkpoint", &s(&other)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("enrolled with checkpoint") && stderr.contains("m2.safetensors"), "{stderr}");
    assert!(!stderr.contains("  "), "one line of words, no runs of spaces: {stderr}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `train --out` refuses a folder that holds a run unless --force;
/// `--resume` needs no flag repeated (it reads the run's options), takes a
/// longer --epochs, and names a flag given again with another value.
#[test]
fn train_over_a_run_needs_force_and_resume_reads_the_saved_options() {
    let d = std::env::temp_dir().join(format!("arcface-cli-rerun-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let orl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/orl");
    let run = d.join("run");
    let (orl_s, run_s) = (orl.to_str().unwrap(), run.to_str().unwrap());
    let tiny = ["--model", "mininet", "--input", "16", "--people", "2", "--batch-size", "4", "--quiet"];
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--out", run_s];
        args.extend_from_slice(extra);
        arcface(&args)
    };
    let out = train(&[&["--data", orl_s, "--epochs", "1", "--lr", "0.01"][..], &tiny].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = std::fs::read(run.join("last.safetensors")).unwrap();

    let out = train(&[&["--data", orl_s, "--epochs", "1"][..], &tiny].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already holds a run") && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(run.join("last.safetensors")).unwrap(), first, "the run is untouched");

    let out = train(&["--resume", "--epochs", "2", "--lr", "0.5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--lr 0.5 differs from the run's 0.01"), "{stderr}");
    let out = train(&["--resume", "--epochs", "2", "--val-bin", "lfw.bin"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--val-bin lfw.bin differs from the run's none"), "{stderr}");

    let out = train(&["--resume", "--epochs", "2", "--lr", "0.01", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 1 + 2, "{metrics}");

    let out = train(&[&["--data", orl_s, "--epochs", "1", "--force", "--json"][..], &tiny].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["out", "metrics", "best_epoch", "best_val_loss", "diverged"] {
        assert!(r.get(key).is_some(), "train --json lacks `{key}`: {r}");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 1 + 1, "a new run: {metrics}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Exit codes: 2 for a usage error (clap), 1 for a runtime error.
#[test]
fn usage_errors_exit_2_and_runtime_errors_exit_1() {
    assert_eq!(arcface(&["train", "--no-such-flag"]).status.code(), Some(2));
    assert_eq!(arcface(&["bench", "kernels", "--batch-size", "many"]).status.code(), Some(2));
    let out = arcface(&["eval", "--checkpoint", "/nonexistent/c.safetensors"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `arcface completions SHELL` prints a completion script naming the commands.
#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = arcface(&["completions", shell]);
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("eval-pairs") && script.contains("batch-size"), "{shell}: {script:.200}");
    }
}

/// A GPU command names its adapter once on stderr, and says when it is a
/// software one; RUST_LOG reaches wgpu's own log.
#[test]
fn the_adapter_is_announced_and_rust_log_reaches_wgpu() {
    let out = arcface(&["gradcheck", "--kernel", "sgd"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("adapter: ").count(), 1, "{stderr}");
    let info: serde_json::Value = serde_json::from_slice(&arcface(&["info", "--json"]).stdout).unwrap();
    if info["software"] == true {
        assert!(stderr.contains("warning: a software adapter"), "{stderr}");
    }
    let out =
        Command::new(env!("CARGO_BIN_EXE_arcface")).arg("info").env("RUST_LOG", "wgpu_core=debug").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEBUG wgpu_core"), "{stderr}");
}
