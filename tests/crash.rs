//! Crash safety of training runs: `arcface train` killed with SIGKILL at
//! several moments (before the first epoch is committed, mid-epoch, while it
//! writes an epoch's files) leaves only whole files under their real names,
//! `--resume` finishes the run, and the result equals an uninterrupted run's
//! to the bit (every epoch is seeded; the state file commits each epoch).

#![cfg(unix)]

mod common;
use arcface::data::split::Split;
use arcface::io::tensorfile::TensorFile;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn train(run: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_arcface"));
    c.args(["train", "--out", run.to_str().unwrap(), "--quiet"]);
    if resume {
        c.arg("--resume");
    } else {
        let orl = root().join("data/orl");
        c.args(["--data", orl.to_str().unwrap(), "--model", "mininet", "--input", "16", "--people", "4"]);
        c.args(["--epochs", "8", "--batch-size", "4", "--lr", "0.01", "--seed", "2"]);
    }
    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    c
}

/// Every file under its real name in the run folder reads whole.
fn all_files_whole(run: &Path, moment: &str) {
    for f in ["best.safetensors", "last.safetensors", "state.safetensors"] {
        if run.join(f).exists() {
            TensorFile::read(&run.join(f)).unwrap_or_else(|e| panic!("{moment}: {f}: {e:#}"));
        }
    }
    if run.join("metrics.json").exists() {
        let text = std::fs::read_to_string(run.join("metrics.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{moment}: metrics.json: {e}"));
    }
    if run.join("config.json").exists() {
        let text = std::fs::read_to_string(run.join("config.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{moment}: config.json: {e}"));
    }
    if run.join("split.csv").exists() {
        Split::read_csv(&run.join("split.csv")).unwrap_or_else(|e| panic!("{moment}: split.csv: {e:#}"));
    }
}

/// metrics.csv without its last column (images/s, which no two runs share).
fn metrics(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    text.lines().map(|l| l.rsplit_once(',').map_or(l, |(keep, _)| keep).to_string()).collect()
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let base = std::env::temp_dir().join(format!("arcface-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let whole = base.join("whole");
    let started = Instant::now();
    assert!(train(&whole, false).status().unwrap().success());
    let took = started.elapsed();
    let want = common::weights(&whole.join("last.safetensors"));
    let want_metrics = metrics(&whole);

    // Kill moments spread over the whole run's length, from before the
    // first epoch to the last epoch's writes.
    let moments: Vec<Duration> = [0.15, 0.3, 0.45, 0.6, 0.75, 0.9].iter().map(|f| took.mul_f64(*f)).collect();
    for (i, at) in moments.iter().enumerate() {
        let run = base.join(format!("killed{i}"));
        let mut child = train(&run, false).spawn().unwrap();
        std::thread::sleep(*at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let moment = format!("killed after {at:?}");
        all_files_whole(&run, &moment);
        // A stale temporary file from a write in progress is ignored.
        std::fs::write(run.join(".state.safetensors.tmp"), b"half a write").unwrap();
        let resumed = train(&run, true).status().unwrap();
        if !run.join("config.json").exists() {
            // Killed before the run's options were saved: nothing to resume.
            assert!(!resumed.success(), "{moment}");
            continue;
        }
        assert!(resumed.success(), "{moment}: --resume failed");
        all_files_whole(&run, &moment);
        assert_eq!(metrics(&run), want_metrics, "{moment}");
        assert!(
            common::weights(&run.join("last.safetensors")) == want,
            "{moment}: the weights differ from an uninterrupted run"
        );
        TensorFile::read(&run.join("best.safetensors")).unwrap();
    }
    let _ = std::fs::remove_dir_all(&base);
}
