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

/// The tests here time a server each: one at a time on a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_mixed_load_is_answered_right_within_the_memory_bound() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
                    Kind::TinyHuge => 422,
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

/// What a face may take while the probes below run: alone it takes 0.1 to
/// 0.6 s on a 2-core machine with lavapipe (BENCHMARKS.md); without the
/// server's admission rules the idle sockets made every request 503 for 10
/// s and two tiny "huge" JPEGs delayed a face to 28 s.
const FACE_BOUND_S: f64 = 2.0;

/// 300 connections that send nothing (more than the 256 the server keeps
/// open) and a client that posts 7 KB JPEGs declaring 6000 x 6000 pixels,
/// both from addresses of their own: faces from another address are still
/// named right within `FACE_BOUND_S`, and every probe JPEG is refused.
#[test]
fn idle_sockets_and_tiny_huge_photos_do_not_keep_a_face_waiting() {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicBool, Ordering};
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::gpu();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let server = load::Server::start(root, &[]);
    let addr = server.addr;
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let faces = load::test_photos(root);
    // The first request compiles the kernels: not what is timed.
    let warm = load::form(&std::fs::read(&faces[0].0).unwrap());
    assert_eq!(load::exchange(addr, local, load::post_head(warm.len()).as_bytes(), &warm).0, 200);
    let idle: Vec<_> = (0..300).map(|_| load::connect_from(addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stop = Arc::new(AtomicBool::new(false));
    // A handful at a time: four senders, each posting every 50 ms.
    let probers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let jpeg = load::tiny_huge_jpeg(6000, 6000);
                let body = load::form(&jpeg);
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
                    let (status, _, body) = load::exchange(addr, from, load::post_head(body.len()).as_bytes(), &body);
                    statuses.push((status, body));
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                statuses
            })
        })
        .collect();
    let mut took = Vec::new();
    for (photo, person) in faces.into_iter().skip(1).take(6) {
        let body = load::form(&std::fs::read(&photo).unwrap());
        let started = std::time::Instant::now();
        let (status, _, answer) = load::exchange(addr, local, load::post_head(body.len()).as_bytes(), &body);
        took.push(started.elapsed().as_secs_f64());
        let a: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        assert_eq!((status, a["person"].as_str()), (200, Some(person.as_str())), "{answer}");
    }
    let (healthz, _, _) =
        load::exchange(addr, local, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"");
    stop.store(true, Ordering::SeqCst);
    let probes: Vec<_> = probers.into_iter().flat_map(|p| p.join().unwrap()).collect();
    drop(idle);
    eprintln!("faces answered in {took:.2?} s while {} probe JPEGs were refused", probes.len());
    assert_eq!(healthz, 200);
    let slowest = took.iter().cloned().fold(0.0, f64::max);
    assert!(slowest < FACE_BOUND_S, "a face took {slowest:.2} s (bound {FACE_BOUND_S} s): {took:?}");
    assert!(!probes.is_empty());
    for (status, body) in &probes {
        assert!(*status == 422 && body.contains("pixels a byte"), "{status} {body}");
    }
}
