//! One training step of each model against PyTorch's, from the golden files
//! in tests/fixtures (copied from ../shared/reference; see its README):
//! same parameters, same input, then the embedding, logits, loss, every
//! gradient and the batch-norm running statistics after the step.
//!
//! MobileFaceNet's f32 step is ill-conditioned (ArcFace s = 64 on a loss of
//! 40.8, batch norm over 4 images): PyTorch's own gradients differ from the
//! exact (f64) ones by up to 1.1e-2 relative L2, so a fixed 1e-3 against
//! PyTorch would test PyTorch's rounding. Each gradient is therefore held to
//! the f64 CPU-reference step as well: ours must be at least as close to it
//! as PyTorch's is. The projection layers' BN biases feed only later batch
//! norms, so their exact gradient is zero (|g| ~ 1e-14 in f64): both sides
//! are rounding noise there, and ours must simply be tiny.

mod common;
use arcface::io::tensorfile::TensorFile;
use arcface::kernels::arcface::Margin;
use arcface::models::{Arch, Head, ModelSpec, Net};
use arcface::nn::{Backend, CpuBackend, GpuBackend};
use std::path::Path;

/// Loss and logits: relative error.
const OUTPUT_RTOL: f64 = 1e-4;
/// Each gradient: ||ours - torch|| / ||torch||.
const GRAD_REL_L2: f64 = 1e-3;
/// Running statistics after the step: relative L2 per tensor.
const STATS_REL_L2: f64 = 1e-4;
/// Ours vs f64 may exceed PyTorch vs f64 by this factor: both are f32
/// rounding of an ill-conditioned step. Measured over the 168 non-zero
/// gradient tensors: the ratio has median 0.99 and spans 0.33 to 1.94 (the
/// extremes on small-norm BN parameters). A kernel bug shows as errors of
/// order 1.
const VS_EXACT_SLACK: f64 = 2.5;
/// A gradient whose exact value is zero: our norm must stay below this
/// (PyTorch's are ~5e-6 on this file).
const ZERO_GRAD_NORM: f64 = 1e-4;

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got.iter().zip(want).map(|(g, w)| (*g as f64 - *w as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|w| (*w as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn fixture(name: &str) -> TensorFile {
    TensorFile::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// Loads the file's parameters into a network on `b` and runs one step's
/// forward and backward passes; returns the network (gradients inside),
/// the loss and the logits.
fn run_step<B: Backend>(b: &mut B, file: &TensorFile, spec: ModelSpec) -> (Net<B>, B::T, B::T) {
    let mut net = Net::from_values(b, spec, |name| {
        file.tensors.get(&format!("param.{name}")).map(|t| (t.shape.clone(), t.values.clone()))
    })
    .unwrap();
    let input = file.get("input").unwrap();
    let x = b.upload(&input.values, &input.shape).unwrap();
    let labels: Vec<u32> = file.get("labels").unwrap().values.iter().map(|&v| v as u32).collect();
    let l = b.labels(&labels).unwrap();
    let logits = net.forward_train(b, &x, &l).unwrap();
    let (loss, probs) = b.cross_entropy(&logits, &l).unwrap();
    let dlogits = b.cross_entropy_backward(&probs, &l).unwrap();
    net.backward(b, &dlogits).unwrap();
    (net, loss, logits)
}

/// The gradients of one step on any backend, by parameter name.
fn step_grads<B: Backend>(b: &mut B, file: &TensorFile, spec: ModelSpec) -> Vec<(String, Vec<f32>)> {
    let (net, _, _) = run_step(b, file, spec);
    let names: Vec<String> = net.params.params.iter().filter(|p| p.trainable).map(|p| p.name.clone()).collect();
    names.into_iter().map(|n| (n.clone(), b.download(&net.params.grad(&n).unwrap().clone()))).collect()
}

/// Runs one step on the GPU and checks it against the file; with `exact`,
/// gradients are judged against the f64 step as described above.
fn check_step(file: &TensorFile, spec: ModelSpec, exact: Option<&[(String, Vec<f32>)]>) -> Vec<String> {
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let (net, loss, logits) = run_step(&mut b, file, spec);

    let mut failures = Vec::new();
    let mut check = |what: &str, err: f64, tol: f64| {
        println!("{what:<60} {err:.3e} (tol {tol:.0e})");
        if !(err <= tol) {
            failures.push(format!("{what}: {err:.3e} > {tol:.0e}"));
        }
    };
    let want_loss = file.get("loss").unwrap().values[0] as f64;
    let got_loss = b.download(&loss)[0] as f64;
    check("loss", (got_loss - want_loss).abs() / want_loss.abs(), OUTPUT_RTOL);
    check("logits", rel_l2(&b.download(&logits), &file.get("logits").unwrap().values), OUTPUT_RTOL);
    if let Some(emb) = net.last_embedding.clone() {
        check("embedding", rel_l2(&b.download(&emb), &file.get("embedding").unwrap().values), OUTPUT_RTOL);
    }
    let mut grads = 0;
    for (name, want) in &file.tensors {
        if let Some(p) = name.strip_prefix("grad.") {
            let g = net.params.grad(p).unwrap_or_else(|| panic!("no gradient for {p}")).clone();
            let ours = b.download(&g);
            match exact.and_then(|e| e.iter().find(|(n, _)| n == p)) {
                None => check(name, rel_l2(&ours, &want.values), GRAD_REL_L2),
                Some((_, truth)) if norm(truth) < 1e-9 => {
                    check(&format!("{name} (exactly 0): |g|"), norm(&ours), ZERO_GRAD_NORM)
                }
                Some((_, truth)) => {
                    let torch_err = rel_l2(&want.values, truth);
                    check(
                        &format!("{name} vs f64 (torch {torch_err:.1e})"),
                        rel_l2(&ours, truth),
                        (VS_EXACT_SLACK * torch_err).max(GRAD_REL_L2),
                    );
                }
            }
            grads += 1;
        }
        if let Some(p) = name.strip_prefix("after.") {
            let v = net.params.get(p).clone();
            check(name, rel_l2(&b.download(&v), &want.values), STATS_REL_L2);
        }
    }
    assert!(grads >= 8, "only {grads} gradients in the file");
    failures
}

#[test]
fn mobilefacenet_arcface_step_matches_pytorch() {
    let file = fixture("mobilefacenet_arcface_step.safetensors");
    let Margin { s, m } = Margin { s: 64.0, m: 0.5 };
    let spec = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 10, head: Head::ArcFace { s, m } };
    let exact = step_grads(&mut CpuBackend, &file, spec);
    let failures = check_step(&file, spec, Some(&exact));
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn mininetwork16_step_matches_pytorch() {
    let file = fixture("mininetwork16_step.safetensors");
    let spec = ModelSpec { arch: Arch::MiniNet, input: 16, classes: 10, head: Head::Softmax };
    let failures = check_step(&file, spec, None);
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn mobilefacenet_has_the_papers_size() {
    let spec =
        ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 10, head: Head::ArcFace { s: 64.0, m: 0.5 } };
    // PyTorch twin: 1,003,136 backbone + 10 x 128 head (../shared/reference/README.md).
    assert_eq!(spec.parameter_count(), 1_004_416);
    let backbone_macs = spec.macs() - 128 * 10;
    assert!((backbone_macs as f64 / 221e6 - 1.0).abs() < 0.01, "{backbone_macs} multiply-adds");
}

/// An imported network with batch norms (IResNet-shaped: after convolutions,
/// before one, on a residual branch and its shortcut, after the last linear
/// layer), exported by PyTorch to ONNX and imported; one ArcFace step in
/// training mode against PyTorch's (tests/fixtures/imported_bn_step): the
/// embedding, logits, loss, every backbone gradient and the running
/// statistics after the forward pass, with the tolerances above.
/// One step of the imported network on `b`: the network (gradients and
/// statistics inside), loss, logits and embedding.
fn imported_step<B: Backend>(b: &mut B, file: &TensorFile) -> (Net<B>, B::T, B::T, B::T) {
    use arcface::io::onnx_import::from_onnx;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imported_bn_step");
    let (def, weights) = from_onnx(&dir.join("bn_graph.onnx"), 9).unwrap();
    let spec = ModelSpec { arch: Arch::Imported, input: 9, classes: 3, head: Head::ArcFace { s: 8.0, m: 0.3 } };
    let w = weights.into_iter().map(|(n, t)| (n, t.shape, t.values));
    let mut net = Net::pretrained(b, spec, def, w, 0).unwrap();
    let head = file.get("head.weight").unwrap();
    let ht = b.upload(&head.values, &head.shape).unwrap();
    net.params.set("head.weight", ht);
    let input = file.get("input").unwrap();
    let x = b.upload(&input.values, &input.shape).unwrap();
    let labels: Vec<u32> = file.get("labels").unwrap().values.iter().map(|&v| v as u32).collect();
    let l = b.labels(&labels).unwrap();
    let logits = net.forward_train(b, &x, &l).unwrap();
    let emb = net.last_embedding.clone().unwrap();
    let (loss, probs) = b.cross_entropy(&logits, &l).unwrap();
    let dlogits = b.cross_entropy_backward(&probs, &l).unwrap();
    net.backward(b, &dlogits).unwrap();
    (net, loss, logits, emb)
}

/// An imported network with batch norms (IResNet-shaped: after convolutions,
/// before one, on a residual branch and its shortcut, after the last linear
/// layer), exported by PyTorch to ONNX and imported; one ArcFace step in
/// training mode against PyTorch's (tests/fixtures/imported_bn_step): the
/// embedding, logits, loss, every backbone gradient and the running
/// statistics after the forward pass, with the tolerances above. A bias
/// that only feeds a batch norm has an exact gradient of zero (the f64
/// reference step says which): there ours must simply be tiny.
#[test]
fn imported_network_with_batch_norms_steps_as_pytorch_does() {
    use arcface::models::BACKBONE;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imported_bn_step");
    let file = TensorFile::read(&dir.join("step.safetensors")).unwrap();
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let (net, loss, logits, emb) = imported_step(&mut b, &file);
    let mut c = CpuBackend;
    let (exact, ..) = imported_step(&mut c, &file);

    let mut failures = Vec::new();
    let mut check = |what: &str, err: f64, tol: f64| {
        println!("{what:<40} {err:.3e} (tol {tol:.0e})");
        if !(err <= tol) {
            failures.push(format!("{what}: {err:.3e} > {tol:.0e}"));
        }
    };
    let want_loss = file.get("loss").unwrap().values[0] as f64;
    check("loss", (b.download(&loss)[0] as f64 - want_loss).abs() / want_loss, OUTPUT_RTOL);
    check("logits", rel_l2(&b.download(&logits), &file.get("logits").unwrap().values), OUTPUT_RTOL);
    check("embedding", rel_l2(&b.download(&emb), &file.get("embedding").unwrap().values), OUTPUT_RTOL);
    let (mut grads, mut zero, mut stats) = (0, 0, 0);
    for (name, want) in &file.tensors {
        if let Some(p) = name.strip_prefix("grad.") {
            let key = format!("{BACKBONE}{p}");
            let g = net.params.grad(&key).unwrap_or_else(|| panic!("no gradient for {p}")).clone();
            let ours = b.download(&g);
            let truth = c.download(exact.params.grad(&key).unwrap());
            if norm(&truth) < 1e-9 {
                check(&format!("{name} (exactly 0): |g|"), norm(&ours), ZERO_GRAD_NORM);
                zero += 1;
            } else {
                check(name, rel_l2(&ours, &want.values), GRAD_REL_L2);
            }
            grads += 1;
        }
        if let Some(p) = name.strip_prefix("stat.") {
            let v = net.params.get(&format!("{BACKBONE}{p}")).clone();
            check(name, rel_l2(&b.download(&v), &want.values), STATS_REL_L2);
            stats += 1;
        }
    }
    assert_eq!((grads, stats), (22, 14), "every weight's gradient and every statistic is in the file");
    assert_eq!(zero, 4, "the biases of bn4, bn5, bn6 and fc feed batch norms only");
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
