//! Training runs: an interrupted run resumed ends with the same weights as an
//! uninterrupted one; a diverging run stops with a clear message and keeps
//! its best checkpoint; eval reads the saved split.

mod common;
use arcface::io::tensorfile::TensorFile;
use arcface::models::{Arch, Head, ModelSpec};
use arcface::pipeline::train::{self, TrainConfig};
use arcface::progress::Progress;
use common::mini_config as config;
use std::path::{Path, PathBuf};

fn orl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/orl")
}

fn run_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arcface-train-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn resumed_run_ends_with_the_same_weights() {
    let gpu = common::gpu();
    let whole = run_dir("whole");
    let o = train::run(&gpu, &orl(), &whole, config(3, 0.01), false, &Progress::hidden()).unwrap();
    assert_eq!(o.metrics.len(), 3);
    let parted = run_dir("parted");
    // "Interrupted" after 2 epochs, then resumed to 3.
    train::run(&gpu, &orl(), &parted, config(2, 0.01), false, &Progress::hidden()).unwrap();
    let o2 = train::run(&gpu, &orl(), &parted, config(3, 0.01), true, &Progress::hidden()).unwrap();
    assert_eq!(o2.metrics.len(), 3, "metrics continue from the saved ones");
    assert_eq!(common::weights(&whole.join(train::LAST)), common::weights(&parted.join(train::LAST)));
    for f in ["metrics.csv", "metrics.json", "curves.png", "split.csv", "best.safetensors"] {
        assert!(whole.join(f).is_file(), "{f} missing");
    }
    // Options other than --epochs may not change on resume.
    let err = train::run(&gpu, &orl(), &parted, config(4, 0.02), true, &Progress::hidden()).err().unwrap();
    assert!(format!("{err}").contains("--resume"), "{err}");
}

/// The same in mixed precision (where the adapter has f16): the loss scale's
/// state is saved with the momentum and restored, so the resumed run ends
/// with the same weights and the same scaler (its count of good steps).
#[test]
fn resumed_mixed_precision_run_ends_with_the_same_weights_and_loss_scale() {
    use arcface::pipeline::train::Precision;
    let gpu = common::gpu();
    if !gpu.has_f16() {
        let cfg = TrainConfig { precision: Precision::F16, ..config(1, 0.01) };
        let err = train::run(&gpu, &orl(), &run_dir("f16-refused"), cfg, false, &Progress::hidden()).unwrap_err();
        assert!(err.to_string().contains("--precision f16"), "{err:#}");
        return;
    }
    let cfg = |epochs| TrainConfig { precision: Precision::F16, ..config(epochs, 0.01) };
    let whole = run_dir("whole-f16");
    train::run(&gpu, &orl(), &whole, cfg(3), false, &Progress::hidden()).unwrap();
    let parted = run_dir("parted-f16");
    train::run(&gpu, &orl(), &parted, cfg(2), false, &Progress::hidden()).unwrap();
    train::run(&gpu, &orl(), &parted, cfg(3), true, &Progress::hidden()).unwrap();
    assert_eq!(common::weights(&whole.join(train::LAST)), common::weights(&parted.join(train::LAST)));
    let scale = |dir: &std::path::Path| {
        let state = arcface::io::tensorfile::TensorFile::read(&dir.join("state.safetensors")).unwrap();
        state.get("loss_scale").unwrap().values.clone()
    };
    let (w, p) = (scale(&whole), scale(&parted));
    assert_eq!(w, p, "the loss scale's state");
    assert!(w[1] >= 3.0 && w[2] == 0.0, "three epochs of good steps, none skipped: {w:?}");
}

#[test]
fn divergence_stops_with_a_message_and_keeps_the_best() {
    let gpu = common::gpu();
    let dir = run_dir("nan");
    // An absurd learning rate blows MiniNetwork up within a few steps.
    let o = train::run(&gpu, &orl(), &dir, TrainConfig { lr_step: 100, ..config(6, 1e4) }, false, &Progress::hidden())
        .unwrap();
    let why = o.diverged.expect("divergence detected");
    assert!(why.contains("loss became"), "{why}");
    assert!(o.metrics.len() < 6);
    if o.best_epoch > 0 {
        assert!(dir.join(train::BEST).is_file());
    }
}

#[test]
fn eval_uses_the_saved_test_split() {
    let gpu = common::gpu();
    let dir = run_dir("eval");
    train::run(&gpu, &orl(), &dir, config(1, 0.01), false, &Progress::hidden()).unwrap();
    let r = arcface::pipeline::evaluate::run(&gpu, &dir.join(train::BEST), None, false).unwrap();
    assert_eq!(r.images, 3, "10% of 10 images for each of 3 people");
    assert_eq!(r.per_person.len(), 3);
    assert_eq!(r.confusion.iter().flatten().sum::<usize>(), 3);
    let right: usize = r.per_person.iter().map(|p| p.correct).sum();
    assert_eq!(r.misclassified.len(), 3 - right, "every photo named wrong is listed");
    assert!(r.misclassified.iter().all(|m| m.person != m.predicted && m.path.is_file()));
    assert!(Path::new(&r.confusion_png).is_file());
    let moved = arcface::pipeline::evaluate::run(&gpu, &dir.join(train::BEST), Some(&orl()), false).unwrap();
    assert_eq!(moved.accuracy, r.accuracy);
    let batch = arcface::pipeline::evaluate::run(&gpu, &dir.join(train::BEST), None, true).unwrap();
    assert_eq!(batch.images, 3);
    assert!(batch.loss.is_finite());
}

#[test]
fn sweep_records_divergence_and_keeps_the_best() {
    let gpu = common::gpu();
    let dir = run_dir("sweep");
    let base = TrainConfig { lr_step: 100, ..config(2, 0.0) };
    let rows =
        arcface::pipeline::sweep::run(&gpu, &orl(), &dir, &base, &[1e-3, 1e4], &[0.9], &Progress::hidden()).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(!rows[0].diverged && rows[0].best_val_loss.is_finite());
    assert!(rows[1].diverged, "lr 1e4 must diverge: {rows:?}");
    assert!(dir.join(train::BEST).is_file() && dir.join("sweep.json").is_file());
    let kept = TensorFile::read(&dir.join(train::BEST)).unwrap();
    let first = TensorFile::read(&Path::new(&rows[0].run).join(train::BEST)).unwrap();
    assert_eq!(kept.tensors["fc.bias"].values, first.tensors["fc.bias"].values, "the lowest validation loss is kept");
}

/// Precise BN: with fixed weights, every running mean and variance becomes
/// the average of the batches' statistics, whatever it held before. A batch's
/// statistics are read off one plain train-mode forward (the running mean
/// moves from r0 to 0.9 r0 + 0.1 mu); two copies of that batch must give
/// exactly them, from garbage starting values too. The learned weights must
/// not move.
#[test]
fn bn_recalibration_sets_the_running_statistics_to_the_batch_average() {
    use arcface::data::dataset::{Dataset, Sample};
    use arcface::data::input::Normalization;
    use arcface::data::Batch;
    use arcface::models::Net;
    use arcface::nn::{Backend, GpuBackend};
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let spec = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 2, head: Head::Softmax };
    let mut net = Net::init(&mut b, spec, 5).unwrap();
    let data = Dataset::scan(&orl(), true).unwrap().first_people(2);
    let pair: Vec<Sample> = vec![data.samples[0].clone(), data.samples[data.samples.len() - 1].clone()];
    let snapshot = |b: &mut GpuBackend, net: &Net<GpuBackend>| -> Vec<(String, bool, Vec<f32>)> {
        net.params.params.iter().map(|p| (p.name.clone(), p.trainable, b.download(&p.value))).collect::<Vec<_>>()
    };
    let is_stat = |name: &str| name.ends_with("running_mean") || name.ends_with("running_var");
    let norm = Normalization::default();
    // The pair's statistics, from the momentum update of one forward.
    let before = snapshot(&mut b, &net);
    let inputs = Batch::load(&pair, 112, &norm).unwrap();
    let x = b.upload(&inputs.x, &inputs.shape()).unwrap();
    net.logits_with(&mut b, &x, true).unwrap();
    let after = snapshot(&mut b, &net);
    // Garbage in every running statistic, then two copies of the pair.
    for (name, _, v) in &before {
        if is_stat(name) {
            let t = b.upload(&vec![7.0; v.len()], &[v.len()]).unwrap();
            net.params.set(name, t);
        }
    }
    let twice: Vec<Sample> = pair.iter().chain(&pair).cloned().collect();
    train::recalibrate_bn(&mut b, &mut net, &twice, &norm, 2).unwrap();
    let recalibrated = snapshot(&mut b, &net);
    let mut stats = 0;
    for ((p0, p1), p2) in before.iter().zip(&after).zip(&recalibrated) {
        let (name, trainable, v0) = p0;
        if *trainable {
            assert_eq!(v0, &p2.2, "{name} changed");
            continue;
        }
        if !is_stat(name) {
            continue;
        }
        stats += 1;
        for ((&r0, &r1), &got) in v0.iter().zip(&p1.2).zip(&p2.2) {
            let want = (r1 as f64 - 0.9 * r0 as f64) / 0.1;
            assert!((got as f64 - want).abs() <= 1e-4 + 1e-3 * want.abs(), "{name}: {got} != {want}");
        }
    }
    assert!(stats > 0, "no running statistics found");
}

/// A folder of `people` ORL people with `each` photos, copied.
fn small_set(tag: &str, people: usize, each: usize) -> PathBuf {
    let d = run_dir(tag).join("photos");
    for p in 1..=people {
        std::fs::create_dir_all(d.join(format!("s{p}"))).unwrap();
        for i in 1..=each {
            std::fs::copy(orl().join(format!("s{p}/{i}.pgm")), d.join(format!("s{p}/{i}.pgm"))).unwrap();
        }
    }
    d
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_arcface")).args(args).output().unwrap()
}

#[test]
fn empty_validation_or_test_splits_are_refused_before_anything_is_written() {
    let data = small_set("two-each", 3, 2);
    let out = data.parent().unwrap().join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let run = cli(&["train", "--data", d, "--model", "mininet", "--input", "12", "--epochs", "1", "--out", o]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the validation split is empty") && err.contains("6 photos of 3 people (2 to 2 each)"),
        "{err}"
    );
    assert!(err.contains("--val-fraction"), "{err}");
    assert!(!err.contains("  "), "one line of words, no runs of spaces: {err}");
    assert!(!out.exists(), "nothing written");
    // Half for validation: then the test part is the empty one.
    let run = cli(&[
        "train",
        "--data",
        d,
        "--model",
        "mininet",
        "--input",
        "12",
        "--epochs",
        "1",
        "--val-fraction",
        "0.5",
        "--out",
        o,
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("the test split is empty") && err.contains("--no-test"), "{err}");
    // Without a test part it trains; eval then says there is nothing to test.
    let args =
        ["--model", "mininet", "--input", "12", "--epochs", "1", "--val-fraction", "0.5", "--no-test", "--quiet"];
    let run = cli(&[&["train", "--data", d, "--out", o][..], &args].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let best = out.join(train::BEST);
    let eval = cli(&["eval", "--checkpoint", best.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&eval.stderr);
    assert_eq!(eval.status.code(), Some(1), "{err}");
    assert!(err.contains("no test photos"), "{err}");
}

#[test]
fn minis_default_learning_rate_trains_at_32_pixels() {
    // lr 0.1 (the old default for every model) turned this loss into NaN in
    // the first epoch.
    let data = small_set("mini32", 10, 10);
    let out = data.parent().unwrap().join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mini = ["train", "--data", d, "--model", "mininet", "--input", "32", "--epochs", "1", "--quiet", "--out", o];
    let run = cli(&[&mini[..], &["--json"]].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(r["diverged"].is_null() && r["metrics"][0]["train_loss"].as_f64().unwrap().is_finite(), "{r}");
    assert_eq!(r["metrics"][0]["lr"], 0.001);
    // Diverging on purpose: the message names the epoch and lr, and a tenth.
    let run = cli(&[&mini[..], &["--lr", "1000", "--force"]].concat());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("in epoch 1 (lr 1000)") && err.contains("try --lr 100 (one tenth)"), "{err}");
}

#[test]
fn an_arcface_classifier_is_calibrated_for_strangers() {
    let spec = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 3, head: Head::ArcFace { s: 10.0, m: 0.5 } };
    // Three validation photos: logits are s x cosine; the own person first.
    let logits = [8.0f32, 2.0, 1.0, 3.0, 9.0, 0.0, -1.0, 4.0, 7.0];
    let o = train::open_set(&logits, &[0, 1, 2], &spec).unwrap();
    assert_eq!((o.photos, o.impostors), (3, 6));
    // Impostor cosines 0.2, 0.1, 0.3, 0.0, -0.1, 0.4: the highest (1% of 6).
    assert!((o.threshold - 0.4).abs() < 1e-6, "{o:?}");
    assert_eq!(o.genuine_accepted, 1.0);
    assert!(train::open_set(&logits, &[0, 1, 2], &ModelSpec { head: Head::Softmax, ..spec }).is_none());
}

/// `train --precision f16` from the command line: each epoch's line shows the
/// loss scale, the run's options keep the precision, and `--resume` refuses
/// another one. An adapter without f16 refuses the flag before writing.
#[test]
fn the_command_line_trains_in_mixed_precision() {
    let gpu = common::gpu();
    let data = small_set("cli-f16", 3, 6);
    let out = data.parent().unwrap().join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let args = ["train", "--data", d, "--model", "mininet", "--input", "12", "--epochs", "1", "--precision", "f16"];
    let run = cli(&[&args[..], &["--out", o]].concat());
    let err = String::from_utf8_lossy(&run.stderr);
    if !gpu.has_f16() {
        assert_eq!(run.status.code(), Some(1), "{err}");
        assert!(err.contains("--precision f16") && err.contains("SHADER_F16"), "{err}");
        assert!(!out.exists(), "nothing written");
        return;
    }
    assert!(run.status.success(), "{err}");
    assert!(err.contains("| loss scale 1024, 0 steps skipped"), "{err}");
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(config.contains(r#""precision": "f16""#), "{config}");
    let again = cli(&["train", "--resume", "--out", o, "--epochs", "2", "--precision", "f32"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{err}");
    assert!(err.contains("--precision f32 differs from the run's f16"), "{err}");
    // `bench train` measures the same steps and says which precision it ran.
    let bench = ["bench", "train", "--model", "mininet", "--input", "16", "--batch-size", "4", "--steps", "1"];
    let run = cli(&[&bench[..], &["--precision", "f16", "--json"]].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(r["precision"], "f16", "{r}");
    assert!(r["images_per_s"].as_f64().unwrap() > 0.0, "{r}");
}
