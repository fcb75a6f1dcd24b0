//! `cargo bench --bench serve`: the server under the load test's mix
//! (tests/common/load.rs), twice as long and at 64 clients: latency by kind
//! of request (p50, p99), `/healthz` while it runs, and the server's peak
//! memory (VmHWM), as the table in BENCHMARKS.md ("The server under load");
//! then faces answered per second by 16 clients sending only faces, with
//! `--max-batch 1` (one photo at a time) and with the default; then 32
//! clients posting ORL faces to a server that does not detect (the crops
//! are the faces) beside `arcface bench infer --batch-size 32` of the same
//! model: the share of the engine's batch throughput the server delivers.
//!
//! `cargo bench --bench serve -- SECTION` runs one of `load`, `faces`,
//! `classify` (all three by default).

#[path = "../tests/common/load.rs"]
mod load;
use load::Kind;
use std::path::Path;
use std::sync::Arc;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runs = |section: &str| only.as_deref().is_none_or(|o| o == section);
    if runs("load") {
        load_mix(root);
    }
    if runs("faces") {
        faces(root);
    }
    if runs("classify") {
        classify(root);
    }
}

/// The load test's mix at 64 clients: latency by kind, `/healthz`, peak memory.
fn load_mix(root: &Path) {
    let photos = load::test_photos(root);
    let inputs = Arc::new(load::Inputs::new(root, &photos, 6));
    let server = load::Server::start(root, &[]);
    let mix = load::MIX.map(|(kind, n)| (kind, 2 * n));
    // One client alone first: the latency without a queue.
    let alone = load::run(server.addr, inputs.clone(), &[(Kind::Face, 20), (Kind::LargeFace, 3)], 1, 15);
    println!("one client alone:\n{}", load::latency_table(&alone));
    let report = load::run(server.addr, inputs, &mix, 64, 15);
    let statuses = {
        let mut s: Vec<u16> = report.outcomes.iter().map(|o| o.status).collect();
        s.sort();
        s.dedup();
        s.iter()
            .map(|c| format!("{c}: {}", report.outcomes.iter().filter(|o| o.status == *c).count()))
            .collect::<Vec<_>>()
    };
    println!(
        "{} requests from 64 clients in {:.1} s (default limits: header 10 s, body 30 s); answers {}; server peak RSS {:.0} MB\n",
        report.outcomes.len(),
        report.seconds,
        statuses.join(", "),
        server.peak_rss_mb()
    );
    print!("{}", load::latency_table(&report));
}

/// Faces per second from 16 clients, detection on, one photo at a time and batched.
fn faces(root: &Path) {
    let photos = load::test_photos(root);
    let faces = |extra: &[&str]| {
        let server = load::Server::start(root, extra);
        let r = load::run(server.addr, Arc::new(load::Inputs::new(root, &photos, 6)), &[(Kind::Face, 96)], 16, 15);
        let ok = r.outcomes.iter().filter(|o| o.status == 200).count();
        (ok, r.seconds, ok as f64 / r.seconds)
    };
    for (what, extra) in [("--max-batch 1", &["--max-batch", "1"][..]), ("the default --max-batch", &[][..])] {
        let (ok, secs, per_s) = faces(extra);
        println!("{what}: {ok} faces answered by 16 clients in {secs:.1} s: {per_s:.2} faces/s");
    }
}

/// 32 clients posting ORL faces (no detection) against the engine's own
/// batch-32 throughput on the same model.
fn classify(root: &Path) {
    const CLIENTS: usize = 32;
    let photos = load::test_photos(root);
    let inputs = Arc::new(load::Inputs::new(root, &photos, 0));
    let model = root.join("data/models/mobilefacenet_orl40.safetensors");
    let infer = std::process::Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["bench", "infer", "--checkpoint"])
        .arg(&model)
        .args(["--batch-size", "32", "--json"])
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    let engine: serde_json::Value = serde_json::from_slice(&infer.stdout).unwrap();
    let engine = engine["images_per_s"].as_f64().unwrap();
    println!("arcface bench infer --batch-size 32 on the ORL-40 model: {engine:.2} images/s");
    for batch in ["1", "8", "32"] {
        let server = load::Server::start(root, &["--no-detect", "--max-batch", batch]);
        let r = load::run(server.addr, inputs.clone(), &[(Kind::Face, 8 * CLIENTS)], CLIENTS, 15);
        let right = r
            .outcomes
            .iter()
            .filter(|o| {
                let json: Option<serde_json::Value> = serde_json::from_str(&o.body).ok();
                o.status == 200 && json.is_some_and(|j| j["person"].as_str() == Some(o.person.as_str()))
            })
            .count();
        let per_s = r.outcomes.len() as f64 / r.seconds;
        println!(
            "--no-detect --max-batch {batch}: {} faces from {CLIENTS} clients in {:.1} s: {per_s:.2} faces/s \
             ({:.0}% of bench infer), {right} named right",
            r.outcomes.len(),
            r.seconds,
            100.0 * per_s / engine
        );
    }
}
