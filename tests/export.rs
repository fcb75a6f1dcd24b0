//! `arcface export`: the ONNX file loads in ONNX Runtime and gives what the
//! engine gives on the bundled faces (embeddings as `embed`, logits as
//! `predict` ranks by), and `arcface import` of it round-trips. ONNX Runtime
//! comes from PyPI into the project's `.venv` (`scripts/setup --tests`);
//! without it these tests fail, never skip.

mod common;
use arcface::data::input::{open_rgb, to_input, Normalization};
use arcface::io::checkpoint::{self, CheckpointMeta};
use arcface::io::model_file::{self, Model};
use arcface::models::{Arch, Head, ModelSpec, Net};
use arcface::nn::{Backend, GpuBackend};
use arcface::recognize::session::Session;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arcface-export-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn arcface(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_arcface")).args(args).output().unwrap();
    assert!(out.status.success(), "arcface {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Six bundled ORL faces as model inputs of `size`.
fn faces(size: usize) -> Vec<Vec<f32>> {
    (1..=6)
        .map(|i| {
            to_input(&open_rgb(&root().join(format!("data/orl/s{i}/2.pgm"))).unwrap(), size, &Normalization::default())
        })
        .collect()
}

/// ONNX Runtime's outputs of `model` on `inputs` (N, 3, size, size): name -> values.
fn onnx_runtime(model: &Path, inputs: &[Vec<f32>], size: usize, dir: &Path) -> Vec<(String, Vec<f32>)> {
    let python = root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: the ONNX export tests need ONNX Runtime; run `scripts/setup --tests`",
        python.display()
    );
    let raw: Vec<u8> = inputs.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("input.f32"), raw).unwrap();
    let out = Command::new(python)
        .arg(root().join("tests/python/onnx_run.py"))
        .args([model, &dir.join("input.f32")])
        .args([inputs.len(), 3, size, size].map(|v| v.to_string()))
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "onnx_run.py: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    r["outputs"]
        .as_object()
        .unwrap()
        .keys()
        .map(|name| {
            let bytes = std::fs::read(dir.join(format!("{name}.f32"))).unwrap();
            (name.clone(), bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
        })
        .collect()
}

/// Row by row: cosine >= 0.9999 and max abs error <= 1e-4 of max |ref|.
fn assert_close(what: &str, got: &[f32], want: &[f32], width: usize) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.chunks(width).zip(want.chunks(width)).enumerate() {
        let dot: f64 = g.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (norm(g) * norm(w)).max(1e-30);
        assert!(cos >= 0.9999, "{what} row {i}: cosine {cos}");
        let err = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err <= 1e-4 * scale, "{what} row {i}: max abs error {err:e} over 1e-4 x {scale}");
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// The bundled MobileFaceNet + ArcFace (ORL-40): embeddings equal `embed`'s
/// (no flip), logits equal the engine's eval logits, and the export imports
/// back to the same embeddings.
#[test]
fn mobilefacenet_export_runs_in_onnx_runtime_and_imports_back() {
    let d = tmp("mfn");
    let ckpt = root().join("data/models/mobilefacenet_orl40.safetensors");
    let onnx = d.join("mfn.onnx");
    arcface(&["export", ckpt.to_str().unwrap(), "--onnx", onnx.to_str().unwrap(), "--head"]);
    let inputs = faces(112);
    let ort = onnx_runtime(&onnx, &inputs, 112, &d);
    let get = |name: &str| ort.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no output {name}")).1.clone();

    let gpu = common::gpu();
    let mut s = Session::open(&gpu, &ckpt).unwrap();
    s.flip = false;
    let want: Vec<f32> = s.embed_inputs(&inputs).unwrap().concat();
    let got: Vec<f32> = get("embedding").chunks(128).flat_map(unit).collect();
    assert_close("embedding", &got, &want, 128);

    let mut b = GpuBackend::new(&gpu).unwrap();
    let (mut net, meta) = checkpoint::load(&ckpt, &mut b).unwrap();
    let x = b.upload(&inputs.concat(), &[inputs.len(), 3, 112, 112]).unwrap();
    let logits = net.logits(&mut b, &x).unwrap();
    assert_close("logits", &get("logits"), &b.download(&logits), meta.classes.len());

    // The embedding network alone (no --head) imports back.
    let bare = d.join("bare.onnx");
    arcface(&["export", ckpt.to_str().unwrap(), "--onnx", bare.to_str().unwrap()]);
    let imported = d.join("imported.safetensors");
    arcface(&["import", bare.to_str().unwrap(), "--out", imported.to_str().unwrap()]);
    let mut s2 = Session::open(&gpu, &imported).unwrap();
    s2.flip = false;
    assert_close("imported embedding", &s2.embed_inputs(&inputs).unwrap().concat(), &want, 128);
    std::fs::remove_dir_all(&d).unwrap();
}

/// MiniNetwork (seeded, 32x32, 5 people): logits equal the engine's, and
/// the export imports back.
#[test]
fn mininet_export_runs_in_onnx_runtime() {
    let d = tmp("mini");
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let spec = ModelSpec { arch: Arch::MiniNet, input: 32, classes: 5, head: Head::Softmax };
    let mut net = Net::init(&mut b, spec, 4).unwrap();
    let ckpt = d.join("mini.safetensors");
    let people = (1..=5).map(|i| format!("s{i}")).collect();
    checkpoint::save(&ckpt, &mut b, &net, &CheckpointMeta::new(spec, people)).unwrap();
    let onnx = d.join("mini.onnx");
    arcface(&["export", ckpt.to_str().unwrap(), "--onnx", onnx.to_str().unwrap()]);
    let inputs = faces(32);
    let ort = onnx_runtime(&onnx, &inputs, 32, &d);
    let x = b.upload(&inputs.concat(), &[inputs.len(), 3, 32, 32]).unwrap();
    let logits = net.logits(&mut b, &x).unwrap();
    let want = b.download(&logits);
    assert_close("logits", &ort[0].1, &want, 5);

    let imported = d.join("imported.safetensors");
    arcface(&["import", onnx.to_str().unwrap(), "--out", imported.to_str().unwrap(), "--input", "32"]);
    let mut b2 = GpuBackend::new(&gpu).unwrap();
    let Model::Imported(g) = model_file::open(&imported, &mut b2).unwrap() else { panic!("not an imported graph") };
    let x2 = b2.upload(&inputs.concat(), &[inputs.len(), 3, 32, 32]).unwrap();
    let y = g.forward(&mut b2, &x2).unwrap();
    assert_close("imported logits", &b2.download(&y), &want, 5);
    std::fs::remove_dir_all(&d).unwrap();
}

/// An imported network, and one imported and then fine-tuned here (with its
/// ArcFace head: `--head`), leave again as ONNX that ONNX Runtime runs to
/// the engine's embeddings and logits.
#[test]
fn imported_and_fine_tuned_networks_export_and_run_in_onnx_runtime() {
    let d = tmp("imported");
    let gpu = common::gpu();
    let imported = d.join("relu6.safetensors");
    let source = root().join("tests/fixtures/mobilefacenet/mobilefacenet-relu6-112.onnx");
    arcface(&["import", source.to_str().unwrap(), "--out", imported.to_str().unwrap()]);
    let onnx = d.join("relu6.onnx");
    arcface(&["export", imported.to_str().unwrap(), "--onnx", onnx.to_str().unwrap()]);
    let inputs = faces(112);
    let ort = onnx_runtime(&onnx, &inputs, 112, &d);
    let mut s = Session::open(&gpu, &imported).unwrap();
    s.flip = false;
    let want: Vec<f32> = s.embed_inputs(&inputs).unwrap().concat();
    let got: Vec<f32> = ort[0].1.chunks(128).flat_map(unit).collect();
    assert_close("imported embedding", &got, &want, 128);

    let tuned = root().join("tests/fixtures/before_one_graph/finetuned9.safetensors");
    let onnx = d.join("tuned.onnx");
    arcface(&["export", tuned.to_str().unwrap(), "--onnx", onnx.to_str().unwrap(), "--head"]);
    let inputs = faces(9);
    let ort = onnx_runtime(&onnx, &inputs, 9, &d);
    let get = |name: &str| ort.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no output {name}")).1.clone();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let (mut net, _) = checkpoint::load(&tuned, &mut b).unwrap();
    let x = b.upload(&inputs.concat(), &[inputs.len(), 3, 9, 9]).unwrap();
    let emb = net.embed_raw(&mut b, &x).unwrap();
    assert_close("fine-tuned embedding", &get("embedding"), &b.download(&emb), 128);
    let logits = net.logits(&mut b, &x).unwrap();
    assert_close("fine-tuned logits", &get("logits"), &b.download(&logits), 3);
    std::fs::remove_dir_all(&d).unwrap();
}
