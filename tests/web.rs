//! The engine in the browser (issue 16): the bundle in web/pkg is built
//! from the current sources, and in headless Chromium with WebGPU
//! (SwiftShader: no GPU needed) `window.arcface` recognises and embeds the
//! bundled model's test photos as the native engine does: the same person,
//! probabilities within 1e-3, embeddings at cosine >= 0.9999, face boxes at
//! IoU >= 0.99; and the page says the recognition ran on this device.

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
    let h = serve::start(serve::Options {
        bind: "127.0.0.1:0".into(),
        limits: Default::default(),
        worker: worker::Config {
            models: vec![("orl40".into(), model.clone())],
            gallery: None,
            detect: true,
            verify_threshold: 0.5,
            gpu: Default::default(),
        },
    })
    .unwrap();
    let mut session = Session::open(gpu, &model).unwrap();
    let mut det = Detector::open(gpu, None, Options::default()).unwrap();

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

    use base64::Engine;
    let photos: Vec<_> = load::test_photos(root()).into_iter().step_by(8).take(5).collect();
    let (mut worst_p, mut worst_cos, mut worst_iou) = (0.0f64, 1.0f64, 1.0f64);
    for (photo, person) in &photos {
        let bytes = std::fs::read(photo).unwrap();
        let script = "const [b64, done] = arguments; \
            const blob = new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))]); \
            Promise.all([window.arcface.recognize(blob, 'orl40'), window.arcface.embed(blob, 'orl40')]) \
              .then(([r, e]) => done(JSON.stringify({ r, e: Array.from(e) })), (err) => done(JSON.stringify({ error: String(err) })));";
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let out = b.cmd("POST", "/execute/async", serde_json::json!({"script": script, "args": [b64]}));
        let got: serde_json::Value = serde_json::from_str(out.as_str().unwrap()).unwrap();
        assert!(got["error"].is_null(), "{}: {got}", photo.display());
        let web = &got["r"];

        let (status, server) = predict(h.addr, &bytes, "orl40");
        assert_eq!(status, 200, "{server}");
        assert_eq!(web["person"], server["person"], "{}", photo.display());
        assert_eq!(web["person"].as_str(), Some(person.as_str()));
        assert_eq!(web["device"], "browser");
        for (w, s) in web["top"].as_array().unwrap().iter().zip(server["top"].as_array().unwrap()) {
            assert_eq!(w["person"], s["person"], "{}", photo.display());
            let (pw, ps) = (w["probability"].as_f64().unwrap(), s["probability"].as_f64().unwrap());
            assert!((pw - ps).abs() <= 1e-3, "{}: {} {pw} against {ps}", photo.display(), w["person"]);
            worst_p = worst_p.max((pw - ps).abs());
        }
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
        "{} photos: probabilities within {worst_p:.2e}, cosine >= {worst_cos:.7}, IoU >= {worst_iou:.5}",
        photos.len()
    );

    // The page picks this device by itself and says so.
    b.wait_for("return document.getElementById('local').checked ? 'yes' : ''", 60);
    let (photo, person) = photos[0].clone();
    b.upload_and_go(&photo);
    let got = b.wait_for("return document.getElementById('person').textContent", 120);
    assert_eq!(got, person);
    let ms = b.js("return document.getElementById('ms').textContent");
    assert!(ms.as_str().unwrap().contains("on this device (WebGPU)"), "{ms}");
    drop(b);
    h.stop();
}
