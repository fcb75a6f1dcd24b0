//! What one steady-state training step asks of the device, counted by the
//! engine itself (`gpu::counters`): after the warm-up steps, a step creates
//! no buffers and no bind groups, reads nothing back, is one submission,
//! and stays under a dispatch bound (MobileFaceNet + ArcFace: 300, from 669
//! before fusion and packed SGD).

mod common;
use arcface::gpu::{Counts, KernelSet};
use arcface::io::checkpoint::CheckpointMeta;
use arcface::io::model_file::Model;
use arcface::io::onnx_import::from_onnx;
use arcface::models::{Arch, Head, ModelSpec, Net};
use arcface::nn::{Backend, GpuBackend};
use arcface::pipeline::bench::{profile_step, step_throughput, train_throughput};
use arcface::pipeline::train::Precision;
use arcface::recognize::bench::{profile_call, profile_timer};
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
    let r = train_throughput(&gpu, spec, 4, 1, Precision::F32).unwrap();
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
    let r = train_throughput(&gpu, spec, 4, 1, Precision::F32).unwrap();
    // Measured: 26 (33 before the packed SGD); 38 with the CPU set's im2col
    // convolutions (3 dispatches forward, 2 for dW, 3 for dx, each 1 before);
    // 30 with the GPU-shaped kernels.
    let bound = if gpu.kernels == KernelSet::Cpu { 38 } else { 30 };
    assert_steady("MiniNetwork", r.per_step, bound);
}

/// Imported graphs train through the same executor, batch norms included
/// (fused with what follows them, as MobileFaceNet's are).
#[test]
fn imported_graph_steps_allocate_nothing() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // Measured with the CPU set's kernels: 327 for the MobileFaceNet-shaped
    // graph whose exporter folded its batch norms (330 before its first
    // convolution skipped the input's gradient; 354 with the GPU-shaped
    // kernels), 55 for the IResNet-shaped one with seven batch norms.
    let cases =
        [("mobilefacenet/mobilefacenet-relu6-112.onnx", 112, 330, 354), ("imported_bn_step/bn_graph.onnx", 9, 55, 80)];
    for (file, size, cpu_bound, gpu_bound) in cases {
        let (def, weights) = from_onnx(&fixtures.join(file), size).unwrap();
        let gpu = common::gpu();
        let mut b = GpuBackend::new(&gpu).unwrap();
        let spec = ModelSpec { arch: Arch::Imported, input: size, classes: 5, head: Head::ArcFace { s: 32.0, m: 0.5 } };
        let w = weights.into_iter().map(|(n, t)| (n, t.shape, t.values));
        let mut net = Net::pretrained(&mut b, spec, def, w, 0).unwrap();
        let r = step_throughput(&gpu, &mut b, &mut net, 2, 1).unwrap();
        let bound = if gpu.kernels == KernelSet::Cpu { cpu_bound } else { gpu_bound };
        assert_steady(file, r.per_step, bound);
    }
}

/// `bench train --profile` times every dispatch of one step: as many as the
/// counters count, grouped by kernel, shares adding up to the whole.
#[test]
fn the_step_profile_covers_every_dispatch() {
    let gpu = common::gpu();
    let spec = ModelSpec { arch: Arch::MiniNet, input: 16, classes: 4, head: Head::Softmax };
    let rows = profile_step(&gpu, spec, 4, Precision::F32).unwrap();
    assert!(gpu.has_timestamps() && !rows.is_empty(), "lavapipe has timestamp queries");
    let steady = train_throughput(&gpu, spec, 4, 1, Precision::F32).unwrap().per_step.dispatches;
    assert_eq!(rows.iter().map(|r| r.dispatches as u64).sum::<u64>(), steady);
    let share: f64 = rows.iter().map(|r| r.share).sum();
    assert!((share - 1.0).abs() < 1e-9 && rows.iter().all(|r| r.ms >= 0.0), "{rows:?}");
    assert!(rows.windows(2).all(|w| w[0].ms >= w[1].ms), "largest first: {rows:?}");
}

/// The memory plan by liveness: an inference call's values share buffers
/// once their last reader is recorded, and a training step's gradients once
/// the op that reads them is. Measured on MobileFaceNet at batch 8, whose
/// values take 306 MB: the first inference call allocates 54 MB (131 MB
/// when layer outputs were zeroed buffers outside the plan, 205 MB when
/// every value kept its buffer until the submission), the first training
/// step 357 MB (449 MB).
#[test]
fn an_inference_call_reuses_the_buffers_of_values_it_is_done_with() {
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let spec = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 5, head: Head::ArcFace { s: 32.0, m: 0.5 } };
    let mut net = Net::init(&mut b, spec, 0).unwrap();
    net.fold_batch_norms(&mut b).unwrap();
    let x = b.upload(&vec![0.5; 8 * 3 * 112 * 112], &[8, 3, 112, 112]).unwrap();
    let (r, first) = gpu.counters.during(|| {
        let e = net.embed(&mut b, &x).unwrap();
        b.download(&e)
    });
    assert_eq!(r.len(), 8 * 128);
    let shapes = arcface::models::graph::infer(net.graph(), 112, &|n| {
        net.params.contains(n).then(|| b.shape(net.params.get(n)).to_vec())
    })
    .unwrap();
    let every_value: u64 = shapes.values.values().map(|s| s.iter().product::<usize>() as u64 * 4 * 8).sum();
    assert!(first.bytes_allocated * 4 < every_value, "{} bytes for values of {every_value}", first.bytes_allocated);

    // Training keeps every value for the backward pass; the gradients
    // flowing back share storage. (A fresh device: nothing pooled yet.)
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let x = b.upload(&vec![0.5; 8 * 3 * 112 * 112], &[8, 3, 112, 112]).unwrap();
    let mut net = Net::init(&mut b, spec, 0).unwrap();
    let labels = b.labels(&[0, 1, 2, 3, 4, 0, 1, 2]).unwrap();
    let sgd = arcface::kernels::sgd::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 };
    let (_, step) = gpu.counters.during(|| {
        let (loss, _) = net.train_step(&mut b, &x, &labels, &sgd).unwrap();
        b.download(&loss)
    });
    assert!(step.bytes_allocated * 4 < every_value * 5, "{} bytes for values of {every_value}", step.bytes_allocated);
}

/// Inference finishes each layer's outputs in the layer's own dispatch: its
/// PReLU or ReLU and the residual add after it run as the layer writes them
/// (`passes::epilogues`), so no activation or add kernel runs, and each
/// dispatch is a layer (MobileFaceNet: 53 where 98 ran with them apart).
#[test]
fn an_inference_call_runs_no_activation_or_add_of_its_own() {
    let gpu = common::gpu();
    let timer = profile_timer(&gpu).expect("lavapipe has timestamp queries");
    let mut b = GpuBackend::new(&gpu).unwrap();
    let spec = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 5, head: Head::ArcFace { s: 32.0, m: 0.5 } };
    let net = Net::init(&mut b, spec, 0).unwrap();
    let names = (0..5).map(|i| i.to_string()).collect();
    let mut model = Model::Trained(net, CheckpointMeta::new(spec, names)).for_inference(&mut b).unwrap();
    let p = profile_call(&gpu, &timer, &mut b, &mut model, 2).unwrap();
    let kernels: Vec<&str> = p.by_kernel.iter().map(|k| k.kernel.as_str()).collect();
    assert!(kernels.iter().all(|k| !k.starts_with("activation") && !k.starts_with("residual")), "{kernels:?}");
    assert_eq!(p.dispatches.len(), 53, "{kernels:?}");
    let share: f64 = p.by_kernel.iter().map(|k| k.share).sum();
    assert!((share - 1.0).abs() < 1e-9 && p.dispatches.iter().all(|d| d.ms >= 0.0), "{p:?}");
}

/// An imported network gets what a network built here gets: MobileFaceNet
/// exported with its batch norms and imported back runs inference (batch
/// norms folded) and a training step (batch norms fused with their PReLU
/// and residual add) in exactly the dispatches of the trained one.
#[test]
fn an_imported_mobilefacenet_runs_in_the_dispatches_of_the_trained_one() {
    use arcface::io::model_file;
    use arcface::io::onnx_export::export;
    use arcface::models::graph::Op;
    use arcface::pipeline::bench::train_throughput;
    let d = std::env::temp_dir().join(format!("arcface-counters-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let ckpt = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/mobilefacenet_orl40.safetensors");
    let onnx = d.join("mfn.onnx");
    export(&ckpt, &onnx, false).unwrap();
    let (def, weights) = from_onnx(&onnx, 112).unwrap();
    assert_eq!(def.ops.iter().filter(|op| matches!(op, Op::BatchNorm { .. })).count(), 50, "the batch norms were kept");
    let imported = d.join("imported.safetensors");
    model_file::save_graph(&imported, &def, &weights).unwrap();

    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let x = b.upload(&vec![0.5; 2 * 3 * 112 * 112], &[2, 3, 112, 112]).unwrap();
    let mut per_call = Vec::new();
    for path in [&ckpt, &imported] {
        let mut m = model_file::open(path, &mut b).unwrap().for_inference(&mut b).unwrap();
        for warm in [true, false] {
            let (e, counts) = gpu.counters.during(|| {
                let e = m.embed_raw(&mut b, &x).unwrap();
                b.download(&e)
            });
            assert_eq!(e.len(), 2 * 128);
            if !warm {
                per_call.push(counts);
            }
        }
    }
    let (trained, ours) = (per_call[0], per_call[1]);
    assert_eq!(ours.dispatches, trained.dispatches, "inference: imported {ours:?}, trained {trained:?}");

    let head = Head::ArcFace { s: 32.0, m: 0.5 };
    let spec = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 5, head };
    let trained = train_throughput(&gpu, spec, 2, 1, Precision::F32).unwrap().per_step;
    let spec = ModelSpec { arch: Arch::Imported, ..spec };
    let w = weights.into_iter().map(|(n, t)| (n, t.shape, t.values));
    let mut net = Net::pretrained(&mut b, spec, def, w, 0).unwrap();
    let ours = step_throughput(&gpu, &mut b, &mut net, 2, 1).unwrap().per_step;
    assert_eq!(ours.dispatches, trained.dispatches, "training: imported {ours:?}, trained {trained:?}");
    assert_steady("imported MobileFaceNet", ours, trained.dispatches);
    std::fs::remove_dir_all(&d).unwrap();
}

/// MTCNN waits for the device only where a stage's boxes decide the next
/// stage's work: P-Net's pyramid, R-Net's and O-Net's batches, once each, at
/// any photo size (10 and 19 times in all for these two sizes before); a
/// large photo's pyramid is submitted in parts, never waited for, so its
/// memory stays within its budget (the load test's bound on the server).
#[test]
fn detection_reads_back_once_per_stage_within_its_memory_budget() {
    let gpu = common::gpu();
    for t in arcface::detect::bench::detect_times(&gpu, &[300, 1350], 1).unwrap() {
        assert_eq!(t.faces, 1, "{t:?}");
        assert_eq!(t.per_call.blocking_readbacks, 3, "{t:?}");
        let submits = if t.width == 300 { 3 } else { 7 };
        assert_eq!(t.per_call.submits, submits, "{t:?}");
    }
}
