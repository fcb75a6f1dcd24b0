//! The engine in the browser (issue 16): the bundle in web/pkg is built
//! from the current sources, and in headless Chromium with WebGPU
//! (SwiftShader: no GPU needed) `window.arcface` recognises and embeds the
//! bundled model's test photos as the native engine does: the same person,
//! probabilities within 1e-3, embeddings at cosine >= 0.9999, face boxes at
//! IoU >= 0.99; and the page says the recognition ran on this device
//! (a screenshot in target/web-screenshot.png).

mod common;
#[path = "common/load.rs"]
mod load;
#[path = "common/web_client.rs"]
mod web_client;

use arcface::detect::{Detector, Options};
use arcface::gpu::Gpu;
use arcface::recognize::photo as recognition;
use arcface::recognize::session::Session;
use arcface::serve::{self, worker};
use std::path::Path;
use web_client::{predict, Browser};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file web/pkg/SOURCES lists still has its hash, and it lists every
/// file the browser build compiles: otherwise `scripts/build-web` is due.
#[test]
fn the_bundle_is_built_from_the_current_sources() {
    let listed = std::fs::read_to_string(root().join("web/pkg/SOURCES")).unwrap();
    let check = std::process::Command::new("sha256sum")
        .args(["--check", "--quiet", "web/pkg/SOURCES"])
        .current_dir(root())
        .output()
        .unwrap();
    let changed = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "changed since the bundle was built (run scripts/build-web):\n{changed}");
    let mut want: Vec<String> = Vec::new();
    let mut walk = vec![root().join("src"), root().join("shaders"), root().join("data/mtcnn")];
    while let Some(dir) = walk.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root()).unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                walk.push(p);
            } else if !rel.starts_with("src/cli/") && !rel.starts_with("src/serve/") {
                want.push(rel);
            }
        }
    }
    let missing: Vec<&String> =
        want.iter().filter(|f| !listed.lines().any(|l| l.ends_with(&format!("  {f}")))).collect();
    assert!(missing.is_empty(), "new since the bundle was built (run scripts/build-web): {missing:?}");
}

/// Runs the `arcface` binary; fails the test when it fails.
fn arcface(args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arcface")).args(args).output().unwrap();
    assert!(out.status.success(), "arcface {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn start(models: Vec<(String, std::path::PathBuf)>, gallery: Option<std::path::PathBuf>) -> serve::Handle {
    serve::start(serve::Options {
        bind: "127.0.0.1:0".into(),
        limits: Default::default(),
        worker: worker::Config {
            models,
            gallery,
            detect: true,
            verify_threshold: 0.5,
            gpu: Default::default(),
            max_batch: worker::MAX_BATCH,
        },
    })
    .unwrap()
}

/// A browser with WebGPU on the page of `h`, its engine ready.
fn browser_on(h: &serve::Handle) -> Browser {
    let b = Browser::open(&["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"]);
    b.cmd("POST", "/timeouts", serde_json::json!({"script": 300_000}));
    b.cmd("POST", "/url", serde_json::json!({"url": format!("http://{}/", h.addr)}));
    let adapter = b.cmd(
        "POST",
        "/execute/async",
        serde_json::json!({"script": "const done = arguments[0]; \
            window.arcface.ready.then((a) => done('ok ' + a), (e) => done('error ' + e));", "args": []}),
    );
    assert!(adapter.as_str().unwrap().starts_with("ok"), "no WebGPU in the browser: {adapter}");
    b
}

/// `window.arcface.recognize` and `.embed` of a photo's bytes by `model`.
fn in_browser(b: &Browser, bytes: &[u8], model: &str) -> serde_json::Value {
    use base64::Engine;
    let script = "const [b64, model, done] = arguments; \
        const blob = new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))]); \
        Promise.all([window.arcface.recognize(blob, model), window.arcface.embed(blob, model)]) \
          .then(([r, e]) => done(JSON.stringify({ r, e: Array.from(e) })), (err) => done(JSON.stringify({ error: String(err) })));";
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let out = b.cmd("POST", "/execute/async", serde_json::json!({"script": script, "args": [b64, model]}));
    let got: serde_json::Value = serde_json::from_str(out.as_str().unwrap()).unwrap();
    assert!(got["error"].is_null(), "{got}");
    got
}

/// The browser's top people and scores against the server's; the largest
/// difference in score.
fn same_top(web: &serde_json::Value, server: &serde_json::Value, what: &str) -> f64 {
    assert_eq!(web["person"], server["person"], "{what}");
    assert_eq!(web["device"], "browser");
    let mut worst = 0.0f64;
    for (w, s) in web["top"].as_array().unwrap().iter().zip(server["top"].as_array().unwrap()) {
        assert_eq!(w["person"], s["person"], "{what}");
        // A classifier's probabilities, a gallery's cosines.
        let score = |v: &serde_json::Value| v["probability"].as_f64().or(v["cosine"].as_f64()).unwrap();
        let (pw, ps) = (score(w), score(s));
        assert!((pw - ps).abs() <= 1e-3, "{what}: {} {pw} against {ps}", w["person"]);
        worst = worst.max((pw - ps).abs());
    }
    worst
}

fn iou(a: &[f64], b: &[f32; 4]) -> f64 {
    let (x0, y0) = (a[0].max(b[0] as f64), a[1].max(b[1] as f64));
    let (x1, y1) = (a[2].min(b[2] as f64), a[3].min(b[3] as f64));
    let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
    let area = |w: f64, h: f64| w.max(0.0) * h.max(0.0);
    inter / (area(a[2] - a[0], a[3] - a[1]) + area((b[2] - b[0]) as f64, (b[3] - b[1]) as f64) - inter)
}

#[test]
fn the_browser_engine_answers_as_the_native_one() {
    let gpu: &'static Gpu = Box::leak(Box::new(common::gpu()));
    let model = root().join("data/models/mobilefacenet_orl40.safetensors");
    let h = start(vec![("orl40".into(), model.clone())], None);
    let mut session = Session::open(gpu, &model).unwrap();
    let mut det = Detector::open(gpu, None, Options::default()).unwrap();
    // The model file is fetched once: asked again with its ETag, 304.
    let get = |path: &str, extra: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(h.addr).unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (String::from_utf8_lossy(&out[..at]).to_string(), out[at + 4..].to_vec())
    };
    let (first, body) = get("/api/models/orl40/weights", "");
    assert!(first.starts_with("HTTP/1.1 200") && body == std::fs::read(&model).unwrap(), "{first}");
    let etag = first.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap_or_else(|| panic!("{first}"));
    let (again, _) = get("/api/models/orl40/weights", &format!("If-None-Match: {etag}\r\n"));
    assert!(again.starts_with("HTTP/1.1 304"), "{again}");
    // The bundle goes out gzipped to a browser that takes it.
    let (head, gz) = get("/pkg/arcface_bg.wasm", "Accept-Encoding: gzip, br\r\n");
    assert!(head.contains("content-encoding: gzip") && head.contains("application/wasm"), "{head}");
    let mut wasm = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut wasm).unwrap();
    assert!(wasm == std::fs::read(root().join("web/pkg/arcface_bg.wasm")).unwrap() && gz.len() < 3_000_000);
    let b = browser_on(&h);

    let photos: Vec<_> = load::test_photos(root()).into_iter().step_by(8).take(5).collect();
    let (mut worst_p, mut worst_cos, mut worst_iou) = (0.0f64, 1.0f64, 1.0f64);
    let mut took = Vec::new();
    for (photo, person) in &photos {
        let bytes = std::fs::read(photo).unwrap();
        let started = std::time::Instant::now();
        let got = in_browser(&b, &bytes, "orl40");
        took.push(started.elapsed().as_secs_f64() * 1e3);
        let web = &got["r"];
        let (status, server) = predict(h.addr, &bytes, "orl40");
        assert_eq!(status, 200, "{server}");
        assert_eq!(web["person"].as_str(), Some(person.as_str()));
        worst_p = worst_p.max(same_top(web, &server, &photo.display().to_string()));
        let img = arcface::data::input::open_rgb(photo).unwrap();
        let (native, found) = pollster::block_on(recognition::embed(&mut session, Some(&mut det), &img)).unwrap();
        let web_box: Vec<f64> = web["face"]["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let overlap = iou(&web_box, &found.unwrap().face.bbox);
        assert!(overlap >= 0.99, "{}: box IoU {overlap}", photo.display());
        let e: Vec<f64> = got["e"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let cosine: f64 = e.iter().zip(&native).map(|(a, b)| a * *b as f64).sum();
        assert!(cosine >= 0.9999, "{}: embedding cosine {cosine}", photo.display());
        (worst_cos, worst_iou) = (worst_cos.min(cosine), worst_iou.min(overlap));
    }
    eprintln!(
        "{} photos: probabilities within {worst_p:.2e}, cosine >= {worst_cos:.7}, IoU >= {worst_iou:.5}; \
         in the browser (recognize and embed, the first compiling the pipelines): {:.0?} ms",
        photos.len(),
        took
    );

    // The page picks this device by itself and says so.
    b.wait_for("return document.getElementById('local').checked ? 'yes' : ''", 60);
    let (photo, person) = photos[0].clone();
    b.upload_and_go(&photo);
    let got = b.wait_for("return document.getElementById('person').textContent", 120);
    assert_eq!(got, person);
    let ms = b.js("return document.getElementById('ms').textContent");
    assert!(ms.as_str().unwrap().contains("on this device (WebGPU)"), "{ms}");
    let shot = b.cmd("GET", "/screenshot", serde_json::json!({}));
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(shot.as_str().unwrap()).unwrap();
    std::fs::write(root().join("target/web-screenshot.png"), png).unwrap();
    drop(b);
    h.stop();
}

/// An imported network (the MobileFaceNet ONNX fixture) with a gallery of
/// four ORL people enrolled from five photos each: the browser fetches the
/// gallery too and names the other photos' people with the server's scores.
#[test]
fn an_imported_model_names_the_gallerys_people_in_the_browser() {
    common::gpu(); // fails loudly without an adapter
    let d = std::env::temp_dir().join(format!("arcface-web-gallery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let people = d.join("people");
    for person in ["s1", "s2", "s3", "s4"] {
        std::fs::create_dir_all(people.join(person)).unwrap();
        for i in 1..=5 {
            let from = root().join(format!("data/orl/{person}/{i}.pgm"));
            std::fs::copy(from, people.join(format!("{person}/{i}.pgm"))).unwrap();
        }
    }
    let (mfn, gallery) = (d.join("mfn.safetensors"), d.join("gallery.safetensors"));
    let onnx = root().join("tests/fixtures/mobilefacenet/mobilefacenet-relu6-112.onnx");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    arcface(&["import", &s(&onnx), "--out", &s(&mfn)]);
    arcface(&["enroll", &s(&people), "--checkpoint", &s(&mfn), "--out", &s(&gallery)]);
    let h = start(vec![("mfn".into(), mfn)], Some(gallery));
    let b = browser_on(&h);
    let mut worst = 0.0f64;
    for person in ["s1", "s2", "s3", "s4"] {
        let bytes = std::fs::read(root().join(format!("data/orl/{person}/8.pgm"))).unwrap();
        let web = &in_browser(&b, &bytes, "mfn")["r"];
        let (status, server) = predict(h.addr, &bytes, "mfn");
        assert_eq!(status, 200, "{server}");
        worst = worst.max(same_top(web, &server, person));
    }
    eprintln!("gallery scores within {worst:.2e}");
    drop(b);
    h.stop();
    std::fs::remove_dir_all(&d).unwrap();
}
