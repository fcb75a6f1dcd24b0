//! The server under a mixed load (issue 15): 40 clients at once send a few
//! hundred requests — faces (a few of them 30-megapixel photos),
//! 39-megapixel 16-bit photos without a face, non-images, decompression bombs, uploads over the size limit, and
//! connections that stall their headers or their body — while another
//! polls `/healthz`. Every face is named right, every bad request gets its
//! 4xx (or 503) JSON error, nothing else answers 5xx, `/healthz` always
//! answers within a second, and the server's peak memory stays under the
//! bound README states. Latency and memory of a longer run:
//! `cargo bench --bench serve` (BENCHMARKS.md).

mod common;
#[path = "common/load.rs"]
mod load;
use load::Kind;
use std::path::Path;
use std::sync::Arc;

/// README's bound on the server's memory with the default limits.
const PEAK_RSS_MB: f64 = 1536.0;

#[test]
fn a_mixed_load_is_answered_right_within_the_memory_bound() {
    common::gpu(); // fails loudly without an adapter
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let photos = load::test_photos(root);
    let inputs = Arc::new(load::Inputs::new(root, &photos, 3));
    let server = load::Server::start(root, &["--header-timeout", "2", "--body-timeout", "3"]);
    let mix = load::MIX;
    let report = load::run(server.addr, inputs, &mix, 40, 15);
    let peak = server.peak_rss_mb();
    eprintln!(
        "{} requests in {:.1} s, peak RSS {peak:.0} MB\n{}",
        report.outcomes.len(),
        report.seconds,
        load::latency_table(&report)
    );

    assert_eq!(report.outcomes.len(), mix.iter().map(|m| m.1).sum::<usize>());
    let mut wrong = Vec::new();
    for o in &report.outcomes {
        let json: Option<serde_json::Value> = serde_json::from_str(&o.body).ok();
        let field = |k: &str| json.as_ref().and_then(|j| j[k].as_str()).unwrap_or_default().to_string();
        let ok = match o.kind {
            Kind::Face | Kind::LargeFace => o.status == 200 && field("person") == o.person,
            // Cut off at the header deadline without an answer.
            Kind::StalledHead => o.status == 0 && o.seconds < 2.0 + 2.0,
            kind => {
                let expected = match kind {
                    Kind::NotAnImage => 400,
                    Kind::DeepPhoto => 422,
                    Kind::Bomb | Kind::Oversize => 413,
                    _ => 408,
                };
                (o.status == expected || o.status == 503) && !field("error").is_empty()
            }
        };
        if !ok {
            wrong.push(format!(
                "{:?} ({}): {} {} after {:.1} s",
                o.kind,
                o.person,
                o.status,
                o.body.chars().take(200).collect::<String>(),
                o.seconds
            ));
        }
    }
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), report.outcomes.len(), wrong.join("\n"));
    let slowest = report.healthz.iter().cloned().fold(0.0, f64::max);
    assert!(
        report.healthz.len() >= 10 && slowest < 1.0,
        "/healthz: {} polls, slowest {slowest:.2} s",
        report.healthz.len()
    );
    assert!(peak < PEAK_RSS_MB, "peak RSS {peak:.0} MB over {PEAK_RSS_MB} MB");
}
