//! `cargo bench --bench dataset_memory`: the peak memory of `arcface train`
//! on a RecordIO set of 400 images and on one of 20,000 (the bundled ORL
//! faces copied 50 times), one epoch of MiniNetwork at 12x12, each run its
//! own process: the streaming loader holds the index and the batches in
//! flight, so the two peaks differ by the index, not by the images
//! (BENCHMARKS.md, "Datasets at scale").

use arcface::data::dataset::Dataset;
use arcface::data::recordio::DatasetWriter;
use std::path::Path;
use std::process::Command;

/// ORL's 400 photos `copies` times, each person's together, as a RecordIO set.
fn make_set(dir: &Path, copies: usize) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let orl = Dataset::scan(&arcface::data::bundled("orl").unwrap(), false).unwrap();
    let mut w = DatasetWriter::create(&dir.join("train.rec")).unwrap();
    for label in 0..orl.people.len() {
        for _ in 0..copies {
            for s in orl.samples.iter().filter(|s| s.label == label) {
                w.push(label as u32, std::fs::read(&s.path).unwrap()).unwrap();
            }
        }
    }
    w.finish((112, 92)).unwrap() as usize
}

/// Peak resident memory of the child that ran, in MB (wait4's rusage).
#[cfg(unix)]
fn run_peak_mb(cmd: &mut Command) -> f64 {
    let child = cmd.spawn().unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0 && status == 0, "arcface train failed ({status})");
    usage.ru_maxrss as f64 / 1024.0
}

#[cfg(unix)]
fn main() {
    let root = std::env::temp_dir().join(format!("arcface-dataset-memory-{}", std::process::id()));
    println!("| images | seconds | peak memory (MB) |\n| --- | --- | --- |");
    for copies in [1, 50] {
        let dir = root.join(format!("x{copies}"));
        let n = make_set(&dir, copies);
        let started = std::time::Instant::now();
        let peak = run_peak_mb(Command::new(env!("CARGO_BIN_EXE_arcface")).args([
            "train",
            "--data",
            dir.to_str().unwrap(),
            "--out",
            root.join(format!("run{copies}")).to_str().unwrap(),
            "--model",
            "mininet",
            "--input",
            "12",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--quiet",
        ]));
        println!("| {n} | {:.1} | {peak:.0} |", started.elapsed().as_secs_f64());
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[cfg(not(unix))]
fn main() {
    eprintln!("dataset_memory measures child processes with wait4: Unix only");
}
