//! The GPU-shaped kernel set stays GPU-shaped on machines without a GPU:
//! every dispatch of a whole training step (forward, loss, backward, SGD)
//! is recorded, never submitted, and its longest per-invocation loop, as
//! the kernel's own dispatch code sized it, must stay under 8,192
//! iterations. A GPU with hundreds of thousands of threads starves on a
//! dispatch where a few hundred invocations each loop over N*H*W.

mod common;
use arcface::data::Batch;
use arcface::gpu::{Gpu, KernelSet, Launched};
use arcface::kernels::sgd::Sgd;
use arcface::models::{Arch, Head, ModelSpec, Net};
use arcface::nn::{Backend, GpuBackend};

const MAX_SERIAL: u64 = 8_192;
const BATCH: usize = 32;

/// The dispatches of one training step of `spec` at batch 32 with `set`.
/// Bindings may be as large as on a big GPU (nothing is submitted), so the
/// batch runs whole, as it does there.
fn step_launches(gpu: &mut Gpu, set: KernelSet, spec: ModelSpec) -> Vec<Launched> {
    gpu.kernels = set;
    gpu.limits.max_storage_buffer_binding_size = 4 << 30;
    let mut b = GpuBackend::new(gpu).unwrap();
    b.binding_limit = 4 << 30;
    let mut net = Net::init(&mut b, spec, 0).unwrap();
    b.flush();
    let input = Batch::synthetic(BATCH, spec.input, spec.classes);
    let x = b.upload(&input.x, &input.shape()).unwrap();
    let labels = b.labels(&input.labels).unwrap();
    net.train_step(&mut b, &x, &labels, &Sgd { lr: 1e-3, momentum: 0.9, weight_decay: 5e-4 }).unwrap();
    b.recorder().launches().collect()
}

fn too_long(launches: &[Launched]) -> Vec<String> {
    launches
        .iter()
        .filter(|l| l.serial > MAX_SERIAL)
        .map(|l| format!("{} ({} invocations x {} iterations)", l.kernel.entry, l.invocations, l.serial))
        .collect()
}

fn assert_gpu_shaped(what: &str, spec: ModelSpec) {
    let mut gpu = common::gpu();
    let launches = step_launches(&mut gpu, KernelSet::Gpu, spec);
    assert!(launches.len() > 20, "{what}: only {} dispatches recorded", launches.len());
    let bad = too_long(&launches);
    assert!(
        bad.is_empty(),
        "{what}: {} dispatches over {MAX_SERIAL} serial iterations:\n{}",
        bad.len(),
        bad.join("\n")
    );
    let worst = launches.iter().map(|l| l.serial).max().unwrap();
    eprintln!("{what}: {} dispatches, longest loop {worst} iterations", launches.len());
}

#[test]
fn mobilefacenet_step_is_gpu_shaped() {
    let spec =
        ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 40, head: Head::ArcFace { s: 32.0, m: 0.5 } };
    assert_gpu_shaped("MobileFaceNet + ArcFace", spec);
}

#[test]
fn mininet_112_step_is_gpu_shaped() {
    let spec = ModelSpec { arch: Arch::MiniNet, input: 112, classes: 40, head: Head::Softmax };
    assert_gpu_shaped("MiniNetwork 112", spec);
}

/// The check has teeth: the CPU-shaped set, which keeps long reductions
/// whole in one invocation, fails it.
#[test]
fn the_cpu_set_would_fail_the_check() {
    let spec =
        ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 40, head: Head::ArcFace { s: 32.0, m: 0.5 } };
    let mut gpu = common::gpu();
    let bad = too_long(&step_launches(&mut gpu, KernelSet::Cpu, spec));
    assert!(bad.iter().any(|b| b.starts_with("matmul")), "expected the 1x1 weight gradients over 8,192: {bad:?}");
}
