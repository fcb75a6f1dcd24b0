//! `cargo bench --bench serve`: the server under the load test's mix
//! (tests/common/load.rs), twice as long and at 64 clients: latency by kind
//! of request (p50, p99), `/healthz` while it runs, and the server's peak
//! memory (VmHWM), as the table in BENCHMARKS.md ("The server under load");
//! then faces answered per second by 16 clients sending only faces, with
//! `--max-batch 1` (one photo at a time) and with the default.

#[path = "../tests/common/load.rs"]
mod load;
use load::Kind;
use std::path::Path;
use std::sync::Arc;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
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
    drop(server);

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
