//! What one steady-state training step asks of the device, counted by the
//! engine itself (`gpu::counters`): after the warm-up steps, a step creates
//! no buffers and no bind groups, reads nothing back, is one submission,
//! and stays under a dispatch bound (MobileFaceNet + ArcFace: 300, from 669
//! before fusion and packed SGD).

mod common;
use arcface::gpu::{Counts, KernelSet};
use arcface::io::onnx_import::from_onnx;
use arcface::models::graph::Op;
use arcface::models::{Arch, Head, ModelSpec, Net};
use arcface::nn::GpuBackend;
use arcface::pipeline::bench::{profile_step, step_throughput, train_throughput};
use std::path::Path;

fn assert_steady(what: &str, c: Counts, max_dispatches: u64) {
    assert_eq!(c.buffers_created, 0, "{what}: {c:?}");
    assert_eq!(c.bytes_allocated, 0, "{what}: {c:?}");
    assert_eq!(c.bind_groups_created, 0, "{what}: {c:?}");
    assert_eq!(c.blocking_readbacks, 0, "{what}: {c:?}");
    assert!(c.submits <= 2, "{what}: {c:?}");
    assert!(c.dispatches > 0 && c.dispatches <= max_dispatches, "{what}: {c:?}");
}

#[test]
fn mobilefacenet_step_allocates_nothing_and_stays_under_a_dispatch_bound() {
    let gpu = common::gpu();
    let spec = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 5, head: Head::ArcFace { s: 32.0, m: 0.5 } };
    let r = train_throughput(&gpu, spec, 4, 1).unwrap();
    // Measured: 275 with the CPU-shaped kernels; the GPU-shaped ones add a
    // second pass to each split reduction and cut batch norm into three
    // dispatches each way (516 at this batch).
    let bound = if gpu.kernels == KernelSet::Cpu { 300 } else { 520 };
    assert_steady("MobileFaceNet", r.per_step, bound);
}

#[test]
fn mininet_step_allocates_nothing() {
    let gpu = common::gpu();
    let spec = ModelSpec { arch: Arch::MiniNet, input: 16, classes: 4, head: Head::Softmax };
    let r = train_throughput(&gpu, spec, 4, 1).unwrap();
    // Measured: 26 (33 before the packed SGD); 38 with the CPU set's im2col
    // convolutions (3 dispatches forward, 2 for dW, 3 for dx, each 1 before);
    // 30 with the GPU-shaped kernels.
    let bound = if gpu.kernels == KernelSet::Cpu { 38 } else { 30 };
    assert_steady("MiniNetwork", r.per_step, bound);
}

#[test]
fn imported_graph_step_allocates_nothing() {
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mobilefacenet/mobilefacenet-relu6-112.onnx");
    let (def, weights) = from_onnx(&onnx, 112).unwrap();
    // Imported batch norms have no backward: such a graph trains its head.
    let frozen = def.ops.iter().any(|op| matches!(op, Op::BatchNorm { .. }));
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let spec = ModelSpec { arch: Arch::Imported, input: 112, classes: 5, head: Head::ArcFace { s: 32.0, m: 0.5 } };
    let w = weights.into_iter().map(|(n, t)| (n, t.shape, t.values));
    let mut net = Net::pretrained(&mut b, spec, def, w, 0).unwrap();
    net.freeze_backbone = frozen;
    let r = step_throughput(&gpu, &mut b, &mut net, 2, 1).unwrap();
    // Measured: 309 (the backbone runs its eval-mode layers one by one), 330
    // with the CPU set's im2col convolutions; 354 with the GPU-shaped kernels.
    let bound = if gpu.kernels == KernelSet::Cpu { 330 } else { 354 };
    assert_steady("imported graph", r.per_step, bound);
}

/// `bench train --profile` times every dispatch of one step: as many as the
/// counters count, grouped by kernel, shares adding up to the whole.
#[test]
fn the_step_profile_covers_every_dispatch() {
    let gpu = common::gpu();
    let spec = ModelSpec { arch: Arch::MiniNet, input: 16, classes: 4, head: Head::Softmax };
    let rows = profile_step(&gpu, spec, 4).unwrap();
    assert!(gpu.has_timestamps() && !rows.is_empty(), "lavapipe has timestamp queries");
    let steady = train_throughput(&gpu, spec, 4, 1).unwrap().per_step.dispatches;
    assert_eq!(rows.iter().map(|r| r.dispatches as u64).sum::<u64>(), steady);
    let share: f64 = rows.iter().map(|r| r.share).sum();
    assert!((share - 1.0).abs() < 1e-9 && rows.iter().all(|r| r.ms >= 0.0), "{rows:?}");
    assert!(rows.windows(2).all(|w| w[0].ms >= w[1].ms), "largest first: {rows:?}");
}
