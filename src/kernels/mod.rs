//! Kernel families. Each module keeps together the shape logic, the CPU
//! reference (f64), the GPU dispatch, the checks and the benchmark cases of
//! one op; its shader is `shaders/<module>.wgsl`. Depthwise convolution is
//! its own family but runs on the convolution kernels (`conv2d::depthwise`).
//! `check` compares results and `gradcheck` runs every family's checks.

pub mod activation;
pub mod arcface;
pub mod batchnorm;
pub mod bn_act;
pub mod check;
pub mod conv2d;
pub mod epilogue;
pub mod gradcheck;
pub mod l2norm;
pub mod linear;
pub mod maxpool;
pub mod reduce;
pub mod resample;
pub mod residual;
pub mod sgd;
pub mod softmax_xent;

use crate::gpu::{BenchCase, Gpu, Kernel, Launch, Recorder, Tensor};
use anyhow::Result;
use check::{CheckRow, Rng};

/// What every family provides to `gradcheck`, `bench kernels` and the tests.
pub struct Family {
    pub name: &'static str,
    /// GPU forward and backward against the CPU reference, several shapes.
    pub gradcheck: fn(&Gpu, &mut Rng) -> Result<Vec<CheckRow>>,
    /// The CPU reference's backward against finite differences.
    pub refcheck: fn(&mut Rng) -> Vec<CheckRow>,
    /// Shapes from MobileFaceNet / MiniNetwork at the given batch size.
    pub bench: fn(&Gpu, usize) -> Result<Vec<BenchCase>>,
}

pub const FAMILIES: &[Family] = &[
    conv2d::FAMILY,
    conv2d::depthwise::FAMILY,
    batchnorm::FAMILY,
    bn_act::FAMILY,
    activation::FAMILY,
    maxpool::FAMILY,
    resample::FAMILY,
    linear::FAMILY,
    residual::FAMILY,
    l2norm::FAMILY,
    arcface::FAMILY,
    softmax_xent::FAMILY,
    sgd::FAMILY,
];

pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// A reduction kernel (one workgroup per channel or row, `wg_sum` in
/// `shaders/common.wgsl`) at the width of the device's kernel set.
pub(crate) fn reduction(rec: &Recorder, k: Kernel) -> Kernel {
    k.with_wg(rec.gpu().kernels.reduction_width())
}

/// The launch of `groups` workgroups of reduction kernel `k`, each of whose
/// invocations runs `passes` strided loops over `count` terms, then
/// `wg_sum`'s tree.
pub(crate) fn reduction_launch(k: Kernel, groups: usize, count: usize, passes: usize) -> Launch {
    let width = k.wg as usize;
    Launch::groups(groups, passes * count.div_ceil(width) + width.trailing_zeros() as usize)
}

/// Uploads f32 data (test and bench helper), as f16 within `check::in_half`.
pub(crate) fn upload(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
    let dtype = if check::checking_half() { crate::gpu::Dtype::F16 } else { crate::gpu::Dtype::F32 };
    Tensor::from_f32_as(gpu, data, shape, dtype)
}
