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
    train_for(run, resume, (!resume).then_some(8))
}

/// `train`, or `train --resume`, with `--epochs` when given.
fn train_for(run: &Path, resume: bool, epochs: Option<usize>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_arcface"));
    c.args(["train", "--out", run.to_str().unwrap(), "--quiet"]);
    if resume {
        c.arg("--resume");
    } else {
        let orl = root().join("data/orl");
        c.args(["--data", orl.to_str().unwrap(), "--model", "mininet", "--input", "16", "--people", "4"]);
        c.args(["--batch-size", "4", "--lr", "0.01", "--seed", "2"]);
    }
    if let Some(n) = epochs {
        c.args(["--epochs", &n.to_string()]);
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

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        match out {
            Ok(o) if o.status.success() => Tmpfs(dir.to_path_buf()),
            Ok(o) => {
                panic!("mounting a tmpfs needs root (CI runs as root): {}", String::from_utf8_lossy(&o.stderr).trim())
            }
            Err(e) => panic!("cannot run mount: {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system that holds `dir` until a write fails, then frees
/// `room` bytes.
fn fill(dir: &Path, room: u64) -> std::path::PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    // The last partial block may have fit byte by byte.
    while f.write_all(&[0]).is_ok() {}
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(room)).unwrap();
    filler
}

/// A full disk while a resumed run writes its checkpoint: the run stops
/// (exit 1) with an error that names the file and the cause, the files of the
/// last committed epoch stay whole and unchanged, no temporary file is
/// left, and once there is room again `--resume` finishes the run.
#[test]
fn a_full_disk_stops_the_run_with_a_clear_error_and_keeps_the_last_epoch() {
    let base = std::env::temp_dir().join(format!("arcface-full-{}", std::process::id()));
    let disk = Tmpfs::mount(&base, "16m");
    let run = base.join("run");
    assert!(train_for(&run, false, Some(2)).status().unwrap().success());
    // (The metrics files are also rewritten when the run resumes, from the
    // state file: to the same bytes, as its floats read back exactly.)
    let files = ["best.safetensors", "last.safetensors", "state.safetensors", "metrics.json", "metrics.csv"];
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(run.join(f)).unwrap()).collect();

    // Room for the metrics files (rewritten when the run resumes), not for
    // a 0.9 MB checkpoint.
    let filler = fill(&disk.0, 300_000);
    let out = train_for(&run, true, Some(4)).stderr(std::process::Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device") && err.contains(&run.display().to_string()), "{err}");
    assert!(err.contains(".safetensors: cannot write (the previous file is unchanged)"), "{err}");
    all_files_whole(&run, "disk full");
    for (f, b) in files.iter().zip(&before) {
        assert!(&std::fs::read(run.join(f)).unwrap() == b, "{f} changed although its write failed");
    }
    assert_eq!(metrics(&run).len(), 1 + 2, "a header and the two committed epochs");
    let left: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");

    std::fs::remove_file(filler).unwrap();
    assert!(train_for(&run, true, Some(4)).status().unwrap().success());
    all_files_whole(&run, "after the disk had room again");
    assert_eq!(metrics(&run).len(), 1 + 4, "a header and four epochs");
}
