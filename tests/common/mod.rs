// Each test crate uses a subset of these helpers.
#![allow(dead_code)]

//! Shared by the integration tests: a real GPU device or a loud failure.
//! GPU tests never skip: with no adapter they fail with the install hint.

use arcface::gpu::Gpu;

pub fn gpu() -> Gpu {
    let gpu = Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e:#}"));
    assert_ne!(gpu.info.backend, wgpu::Backend::Gl, "must never run on GL");
    gpu
}

/// Fails listing every failing row, so a red test says what went wrong.
pub fn assert_all_pass(rows: &[arcface::kernels::check::CheckRow]) {
    assert!(!rows.is_empty(), "no checks ran");
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| format!("{} {} {}: max abs {:.3e} {:?}", r.kernel, r.direction, r.shape, r.max_abs_err, r.mismatches))
        .collect();
    assert!(failed.is_empty(), "{} of {} checks failed:\n{}", failed.len(), rows.len(), failed.join("\n"));
}

/// A safetensors file's tensors by name, sorted (to compare two runs' weights).
pub fn weights(path: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    let f = arcface::io::tensorfile::TensorFile::read(path).unwrap();
    let mut v: Vec<_> = f.tensors.into_iter().map(|(k, t)| (k, t.values)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A short `train --init` run on three ORL people (ArcFace s 8, m 0.3,
/// batch 8): `epochs` epochs, the first `frozen` with the backbone frozen.
pub fn fine_tune_config(init: &std::path::Path, epochs: usize, frozen: usize) -> arcface::pipeline::train::TrainConfig {
    use arcface::data::split::{TEST_FRACTION, VAL_FRACTION};
    use arcface::models::{Arch, Head, ModelSpec};
    arcface::pipeline::train::TrainConfig {
        model: ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 0, head: Head::ArcFace { s: 8.0, m: 0.3 } },
        epochs,
        batch_size: 8,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        lr_step: 3,
        lr_gamma: 0.5,
        seed: 1,
        max_people: 3,
        recalibrate_bn: false,
        align: false,
        init: Some(init.to_path_buf()),
        freeze_backbone_epochs: frozen,
        data: None,
        val_fraction: VAL_FRACTION,
        test_fraction: TEST_FRACTION,
        precision: Default::default(),
        val_bins: Vec::new(),
        loader_threads: 0,
    }
}

/// Small and quick: MiniNetwork at 12x12 on 3 ORL people.
pub fn mini_config(epochs: usize, lr: f32) -> arcface::pipeline::train::TrainConfig {
    use arcface::data::split::{TEST_FRACTION, VAL_FRACTION};
    use arcface::models::{Arch, Head, ModelSpec};
    arcface::pipeline::train::TrainConfig {
        model: ModelSpec { arch: Arch::MiniNet, input: 12, classes: 0, head: Head::Softmax },
        epochs,
        batch_size: 8,
        lr,
        momentum: 0.9,
        weight_decay: 5e-4,
        lr_step: 1,
        lr_gamma: 0.5,
        seed: 3,
        max_people: 3,
        recalibrate_bn: false,
        align: false,
        init: None,
        freeze_backbone_epochs: 0,
        data: None,
        val_fraction: VAL_FRACTION,
        test_fraction: TEST_FRACTION,
        precision: Default::default(),
        val_bins: Vec::new(),
        loader_threads: 0,
    }
}
