//! Depthwise 2-D convolution (groups = channels): the 3x3 stride 1/2 layers
//! of MobileFaceNet's bottlenecks and its 7x7 "global depthwise" layer.
//!
//! It runs on the grouped direct kernel of `conv2d` (`shaders/conv2d.wgsl`);
//! this module holds the depthwise shapes, their checks and benchmarks.

use super::{self as conv2d, Conv2d, Path};
use crate::gpu::{BenchCase, Gpu};
use crate::kernels::check::{CheckRow, Rng};
use crate::kernels::Family;
use anyhow::Result;

/// Depthwise convolution of `c` channels with a square k x k window.
pub fn depthwise(n: usize, c: usize, hw: (usize, usize), k: usize, stride: usize, pad: usize) -> Conv2d {
    Conv2d { groups: c, ..Conv2d::new(n, c, hw, c, k, stride, pad) }
}

fn shapes(rng: &mut Rng) -> Vec<Conv2d> {
    vec![
        depthwise(2, 5, (11, 9), 3, 1, 1),
        depthwise(3, 7, (13, 13), 3, 2, 1),
        depthwise(2, 6, (7, 7), 7, 1, 0), // global depthwise: one output per channel
        depthwise(1, 3, (10, 12), 3, 2, 0),
        depthwise(rng.range(1, 3), rng.range(1, 9), (rng.range(3, 15), rng.range(3, 15)), 3, rng.range(1, 2), 1),
    ]
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for s in shapes(rng) {
        rows.extend(conv2d::check_shape(gpu, rng, "depthwise", &s, Path::Direct)?);
        rows.extend(conv2d::check_shape(gpu, rng, "depthwise", &s, Path::Blocked)?);
    }
    Ok(rows)
}

fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    shapes(rng).iter().flat_map(|s| conv2d::refcheck_shape(rng, "depthwise", s)).collect()
}

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let mut cases = Vec::new();
    cases.extend(conv2d::bench_shape(gpu, "depthwise 3x3", depthwise(batch, 64, (56, 56), 3, 1, 1))?);
    cases.extend(conv2d::bench_shape(gpu, "depthwise 3x3 s2", depthwise(batch, 128, (56, 56), 3, 2, 1))?);
    cases.extend(conv2d::bench_shape(gpu, "depthwise 7x7 (gdconv)", depthwise(batch, 512, (7, 7), 7, 1, 0))?);
    Ok(cases)
}

pub const FAMILY: Family = Family { name: "depthwise", gradcheck, refcheck, bench };
