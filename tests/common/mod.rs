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
