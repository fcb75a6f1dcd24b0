//! A mixed load against a running `arcface serve`: faces (some of them
//! 30-megapixel photos), non-images, decompression bombs, uploads over the
//! size limit, and clients that stall their headers or their body, sent by
//! many client threads at once while another polls `/healthz`. Shared by
//! the load test (tests/load.rs: every answer right, bounds held) and the
//! load benchmark (benches/serve.rs: latency and memory for BENCHMARKS.md).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (photo, person) of the bundled ORL-40 model's test split.
pub fn test_photos(root: &Path) -> Vec<(std::path::PathBuf, String)> {
    let csv = std::fs::read_to_string(root.join("data/models/mobilefacenet_orl40.split.csv")).unwrap();
    csv.lines()
        .filter(|l| l.ends_with(",test"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (root.join(f[0]), f[1].to_string())
        })
        .collect()
}

/// `arcface serve` in its own process, so its memory is its own.
pub struct Server {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Serves the bundled ORL-40 model with `extra` flags; waits for it to
    /// listen.
    pub fn start(root: &Path, extra: &[&str]) -> Server {
        let model = format!("orl40={}", root.join("data/models/mobilefacenet_orl40.safetensors").display());
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_arcface"))
            .args(["serve", "--model", &model, "--bind", "127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("serving on http://").unwrap_or_else(|| panic!("{line}")).parse().unwrap();
        Server { child, addr }
    }

    /// The most memory the server has held (VmHWM), in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb / 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Face,
    /// A face scaled up to 30 megapixels, JPEG.
    LargeFace,
    NotAnImage,
    Bomb,
    /// A 39-megapixel 16-bit RGBA PNG with no face: the decoder's worst
    /// case for memory under the pixel limit (8 bytes a pixel).
    DeepPhoto,
    /// 11 MB against the default 10 MB limit.
    Oversize,
    /// Headers in, then the body stalls.
    StalledBody,
    /// Half the headers, then nothing.
    StalledHead,
    /// A JPEG of 7 KB whose header declares 6000 x 6000 pixels.
    TinyHuge,
}

/// The load test's mix (kind, count); the benchmark sends it twice over.
pub const MIX: [(Kind, usize); 9] = [
    (Kind::Face, 160),
    (Kind::LargeFace, 6),
    (Kind::DeepPhoto, 4),
    (Kind::NotAnImage, 30),
    (Kind::Bomb, 30),
    (Kind::Oversize, 16),
    (Kind::StalledBody, 16),
    (Kind::StalledHead, 16),
    (Kind::TinyHuge, 16),
];

/// What the load sends: photos with the person in each, and the bad ones.
pub struct Inputs {
    pub faces: Vec<(Vec<u8>, String)>,
    pub large: Vec<(Vec<u8>, String)>,
    pub bomb: Vec<u8>,
    pub deep: Vec<u8>,
    pub tiny_huge: Vec<u8>,
}

impl Inputs {
    /// `faces` as (file, person); the first `large` of them also scaled up
    /// to 30 megapixels.
    pub fn new(root: &Path, faces: &[(std::path::PathBuf, String)], large: usize) -> Inputs {
        let read = |(p, who): &(std::path::PathBuf, String)| (std::fs::read(p).unwrap(), who.clone());
        let big = |(p, who): &(std::path::PathBuf, String)| {
            let img = image::open(p).unwrap().to_rgb8();
            let img = image::imageops::resize(&img, 5000, 6087, image::imageops::FilterType::Triangle);
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&img).unwrap();
            (jpeg, who.clone())
        };
        Inputs {
            faces: faces.iter().map(read).collect(),
            large: faces.iter().take(large).map(big).collect(),
            bomb: std::fs::read(root.join("tests/fixtures/bomb-20000x20000.png")).unwrap(),
            deep: deep_png(6000, 6500),
            tiny_huge: tiny_huge_jpeg(6000, 6000),
        }
    }
}

/// A small JPEG whose frame header is rewritten to declare `w` x `h`
/// pixels: 7 KB that decode to seconds of work unless refused.
pub fn tiny_huge_jpeg(w: u16, h: u16) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 37 + y * 11) as u8, (x * y) as u8, (x ^ y) as u8]));
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).unwrap();
    // SOF0: FF C0, length (2), precision (1), height (2), width (2).
    let at = jpeg.windows(2).position(|m| m == [0xff, 0xc0]).unwrap();
    jpeg[at + 5..at + 7].copy_from_slice(&h.to_be_bytes());
    jpeg[at + 7..at + 9].copy_from_slice(&w.to_be_bytes());
    jpeg
}

/// A `w` x `h` 16-bit RGBA PNG of a soft gradient.
fn deep_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::ImageBuffer::<image::Rgba<u16>, _>::from_fn(w, h, |x, y| {
        image::Rgba([(x * 8) as u16, (y * 8) as u16, 30000, 65535])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    png
}

/// One request's fate.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: Kind,
    /// The expected person (faces).
    pub person: String,
    /// 0 when the server closed the connection without an answer.
    pub status: u16,
    pub body: String,
    pub headers: String,
    pub seconds: f64,
}

/// Everything a load run saw.
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Seconds each `/healthz` took, polled every 100 ms throughout.
    pub healthz: Vec<f64>,
    pub seconds: f64,
}

const BOUNDARY: &str = "arcfaceLoadBoundary";

pub fn form(image: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\norl40\r\n--{BOUNDARY}\r\n\
         Content-Disposition: form-data; name=\"image\"; filename=\"photo\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(image);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn post_head(len: usize) -> String {
    format!(
        "POST /api/predict HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Sends `head` and `body` (a write the server cuts short is not an error:
/// it may answer before the upload is in) and reads the answer until the
/// connection closes.
pub fn exchange(addr: SocketAddr, from: IpAddr, head: &[u8], body: &[u8]) -> (u16, String, String) {
    let mut s = connect_from(addr, from);
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    if s.write_all(head).is_ok() {
        let _ = s.write_all(body);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return (0, String::new(), text) };
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A connection to `addr` from the loopback address `from` (the server
/// counts requests in flight per address, as clients on their own
/// machines would be).
pub fn connect_from(addr: SocketAddr, from: IpAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect(&addr.into()).unwrap();
    s.into()
}

/// The loopback address of load client `i` (127.0.0.10 and up; 127.0.0.1
/// stays for the tests' own requests).
pub fn client_address(i: usize) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, (10 + i / 200) as u8, (10 + i % 200) as u8))
}

fn send(addr: SocketAddr, from: IpAddr, inputs: &Inputs, kind: Kind, i: usize) -> Outcome {
    let started = Instant::now();
    let mut person = String::new();
    let (status, headers, body) = match kind {
        Kind::Face | Kind::LargeFace => {
            let pool = if kind == Kind::Face { &inputs.faces } else { &inputs.large };
            let (photo, who) = &pool[i % pool.len()];
            person = who.clone();
            let body = form(photo);
            exchange(addr, from, post_head(body.len()).as_bytes(), &body)
        }
        Kind::NotAnImage => {
            let body = form(format!("not a photo, request {i}\n").repeat(100).as_bytes());
            exchange(addr, from, post_head(body.len()).as_bytes(), &body)
        }
        Kind::DeepPhoto => {
            let body = form(&inputs.deep);
            exchange(addr, from, post_head(body.len()).as_bytes(), &body)
        }
        Kind::Bomb => {
            let body = form(&inputs.bomb);
            exchange(addr, from, post_head(body.len()).as_bytes(), &body)
        }
        Kind::Oversize => {
            let body = form(&vec![0x5a; 11_000_000]);
            exchange(addr, from, post_head(body.len()).as_bytes(), &body)
        }
        Kind::TinyHuge => {
            let body = form(&inputs.tiny_huge);
            exchange(addr, from, post_head(body.len()).as_bytes(), &body)
        }
        Kind::StalledBody => {
            exchange(addr, from, post_head(100_000).as_bytes(), format!("--{BOUNDARY}\r\n").as_bytes())
        }
        Kind::StalledHead => exchange(addr, from, b"POST /api/predict HTTP/1.1\r\nHost: load\r\n", b""),
    };
    Outcome { kind, person, status, body, headers, seconds: started.elapsed().as_secs_f64() }
}

/// `mix` (kind, count) shuffled with `seed`, sent by `clients` threads at
/// once.
pub fn run(addr: SocketAddr, inputs: Arc<Inputs>, mix: &[(Kind, usize)], clients: usize, seed: u64) -> Report {
    let mut order: Vec<Kind> = mix.iter().flat_map(|&(k, n)| std::iter::repeat_n(k, n)).collect();
    let mut state = seed.max(1);
    for i in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let order = Arc::new(order);
    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut took = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let t = Instant::now();
                let (status, _, _) = exchange(
                    addr,
                    client_address(0),
                    b"GET /healthz HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n",
                    b"",
                );
                assert_eq!(status, 200, "/healthz");
                took.push(t.elapsed().as_secs_f64());
                std::thread::sleep(Duration::from_millis(100));
            }
            took
        })
    };
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let from = client_address(c + 1);
            let (order, next, outcomes, inputs) = (order.clone(), next.clone(), outcomes.clone(), inputs.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&kind) = order.get(i) else { break };
                let o = send(addr, from, &inputs, kind, i);
                outcomes.lock().unwrap().push(o);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let healthz = poller.join().unwrap();
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    Report { outcomes, healthz, seconds }
}

/// The `q` quantile (0..=1) of `xs`.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(f64::NAN)
}

/// Latency by kind: count, p50 and p99 in milliseconds, as table rows.
pub fn latency_table(report: &Report) -> String {
    let mut kinds: Vec<Kind> = report.outcomes.iter().map(|o| o.kind).collect();
    kinds.sort();
    kinds.dedup();
    let mut out = String::from("| request | count | p50 ms | p99 ms |\n|---|---:|---:|---:|\n");
    for k in kinds {
        let s: Vec<f64> = report.outcomes.iter().filter(|o| o.kind == k).map(|o| o.seconds * 1e3).collect();
        out += &format!("| {k:?} | {} | {:.0} | {:.0} |\n", s.len(), quantile(&s, 0.5), quantile(&s, 0.99));
    }
    let h: Vec<f64> = report.healthz.iter().map(|s| s * 1e3).collect();
    out += &format!("| /healthz (polled) | {} | {:.0} | {:.0} |\n", h.len(), quantile(&h, 0.5), quantile(&h, 0.99));
    out
}
