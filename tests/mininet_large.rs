//! Batch splitting, shown on MiniNetwork: at 112x112 and batch 32 its
//! activations exceed a 128 MiB storage binding, so the executor runs the
//! batch in parts (sized from the graph's shapes, for any model).

mod common;
use arcface::kernels::check::Rng;
use arcface::kernels::sgd::Sgd;
use arcface::models::{Arch, Head, ModelSpec, Net};
use arcface::nn::{Backend, GpuBackend};

fn step(b: &mut GpuBackend, spec: ModelSpec, x: &[f32], labels: &[u32]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut net = Net::init(b, spec, 3).unwrap();
    let xt = b.upload(x, &[labels.len(), 3, spec.input, spec.input]).unwrap();
    let lt = b.labels(labels).unwrap();
    let (_, logits) = net.train_step(b, &xt, &lt, &Sgd { lr: 0.01, momentum: 0.9, weight_decay: 0.0 }).unwrap();
    let logits = b.download(&logits);
    let params: Vec<_> = net.params.params.iter().map(|p| p.value.clone()).collect();
    (logits, params.iter().map(|p| b.download(p)).collect())
}

#[test]
fn chunked_batch_equals_whole_batch() {
    let spec = ModelSpec { arch: Arch::MiniNet, input: 12, classes: 3, head: Head::Softmax };
    let labels = [0, 1, 2, 1, 0];
    let x = Rng::new(4).uniform(labels.len() * 3 * 12 * 12, -1.0, 1.0);
    let gpu = common::gpu();
    let whole = step(&mut GpuBackend::new(&gpu).unwrap(), spec, &x, &labels);
    let mut chunked = GpuBackend::new(&gpu).unwrap();
    chunked.binding_limit = 2 * 128 * 12 * 12 * 4; // two images per chunk: 2 + 2 + 1
    let net = Net::init(&mut chunked, spec, 3).unwrap();
    assert_eq!(net.images_per_run(chunked.binding_limit), 2);
    let split = step(&mut chunked, spec, &x, &labels);
    for (a, b) in whole.0.iter().zip(&split.0) {
        assert!((a - b).abs() <= 1e-5 + 1e-5 * b.abs(), "logits {a} vs {b}");
    }
    for (pa, pb) in whole.1.iter().zip(&split.1) {
        for (a, b) in pa.iter().zip(pb) {
            assert!((a - b).abs() <= 1e-6 + 1e-5 * b.abs(), "parameter after the step {a} vs {b}");
        }
    }
}

/// The real thing: about 225 GFLOP for forward + backward, tens of minutes
/// on lavapipe with the direct 3x3 convolution, so not in the default suite.
/// `cargo test --release --test mininet_large -- --ignored`
#[test]
#[ignore]
fn mininet_112_batch32_forward_backward() {
    let spec = ModelSpec { arch: Arch::MiniNet, input: 112, classes: 10, head: Head::Softmax };
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    assert!(32 * 128 * 112 * 112 * 4 > b.max_binding_bytes(), "the case must exceed one binding");
    let labels: Vec<u32> = (0..32).map(|i| i % 10).collect();
    let x = Rng::new(5).uniform(32 * 3 * 112 * 112, -1.0, 1.0);
    let start = std::time::Instant::now();
    let (logits, params) = step(&mut b, spec, &x, &labels);
    println!("MiniNetwork 112x112 batch 32 step: {:.1} s", start.elapsed().as_secs_f64());
    assert_eq!(logits.len(), 32 * 10);
    assert!(logits.iter().chain(params.iter().flatten()).all(|v| v.is_finite()));
}
