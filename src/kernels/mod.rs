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
pub mod gradcheck;
pub mod l2norm;
pub mod linear;
pub mod maxpool;
pub mod reduce;
pub mod residual;
pub mod sgd;
pub mod softmax_xent;

use crate::gpu::{BenchCase, Gpu, Tensor};
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

/// Invocations per workgroup of the reduction kernels (`RED` in
/// `shaders/common.wgsl`).
pub(crate) const RED: usize = 256;

/// The serial iterations of one invocation of a workgroup reduction:
/// `passes` strided loops over `count` terms, then `wg_sum`'s tree.
pub(crate) fn wg_reduction_serial(count: usize, passes: usize) -> usize {
    passes * count.div_ceil(RED) + RED.trailing_zeros() as usize
}

/// Uploads f32 data (test and bench helper).
pub(crate) fn upload(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
    Tensor::from_f32(gpu, data, shape)
}
