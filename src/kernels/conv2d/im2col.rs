//! Convolutions (one group, not 1x1) as matrix products over an im2col
//! matrix, for the CPU kernel set: the direct kernels load a weight and an
//! input per multiply-add (4 channels per invocation where blocked), while
//! the product shares rows of the weight and reads the taps as a contiguous
//! K in quads. It pays one load and one store per im2col entry, which the
//! product then reads once per output channel (BENCHMARKS.md, "im2col, ...").
//!
//! Per image, `cols` is [kp, ho*wo] (kp = the taps rounded up to 4, extra
//! rows zero): y = W' cols, with W' the weight padded to kp columns,
//! dW = sum over images of dy cols^T, and dx gathers dcols = W'^T dy back
//! onto the image (col2im).

use super::Conv2d;
use crate::gpu::{Gpu, Kernel, KernelSet, Launch, Recorder, Shader, Split, Tensor};
use crate::kernels::epilogue::Epilogue;
use crate::kernels::linear::Gemm;
use anyhow::{bail, Result};

const IM2COL: Kernel = Kernel::new(Shader::Conv2d, "im2col", 64);
const PAD_WEIGHT: Kernel = Kernel::new(Shader::Conv2d, "pad_weight", 64);
const COL2IM: Kernel = Kernel::new(Shader::Conv2d, "col2im", 64);
const COL2IM_S1: Kernel = Kernel::new(Shader::Conv2d, "col2im_s1", 64);

/// The most floats a chunk's `cols` holds: half the adapter's largest
/// storage binding (lavapipe: 128 MiB, so 16 M floats), at most 16 M.
/// Batches whose matrix is larger (MiniNetwork's 32 -> 64 layer at batch 32
/// needs 115 M floats) run in chunks of images.
fn max_cols(gpu: &Gpu) -> usize {
    (gpu.limits.max_storage_buffer_binding_size as usize / 8).min(1 << 24)
}

impl Conv2d {
    fn taps(&self) -> usize {
        self.cin / self.groups * self.kh * self.kw
    }

    /// Rows of `cols`: the taps rounded up to whole quads.
    fn padded_taps(&self) -> usize {
        self.taps().next_multiple_of(4)
    }

    /// Images per chunk (the whole batch where its matrix fits), or None
    /// where the path does not apply on `gpu`: more than one group, one
    /// image's matrix over `max_cols`, or chunks that would start off the
    /// alignment the adapter binds storage at.
    pub(super) fn im2col_chunk(&self, gpu: &Gpu) -> Option<usize> {
        let (ho, wo) = self.out_hw();
        let chunk = (max_cols(gpu) / (self.padded_taps() * ho * wo)).min(self.n);
        let align = gpu.limits.min_storage_buffer_offset_alignment as usize;
        let aligned = |floats: usize| (4 * floats).is_multiple_of(align);
        let starts_aligned = aligned(self.cin * self.h * self.w) && aligned(self.cout * ho * wo);
        (self.groups == 1 && chunk >= 1 && (chunk == self.n || starts_aligned)).then_some(chunk)
    }

    /// Whether `Path::Auto` takes it: the CPU set, not a 1x1 (that is a
    /// product already).
    pub(super) fn im2col_preferred(&self, gpu: &Gpu) -> bool {
        gpu.kernels == KernelSet::Cpu && self.im2col_chunk(gpu).is_some() && !self.gemm_applies()
    }
}

/// One chunk of the batch: its first image and its convolution.
struct Chunk {
    first: usize,
    conv: Conv2d,
}

impl Chunk {
    /// Images `first..` of an (N, C, H, W) tensor.
    fn of(&self, gpu: &Gpu, t: &Tensor) -> Result<Tensor> {
        let per_image = t.numel() / t.shape[0];
        let mut shape = t.shape.clone();
        shape[0] = self.conv.n;
        t.view(gpu, self.first * per_image, &shape)
    }
}

fn chunks(gpu: &Gpu, s: &Conv2d) -> Result<Vec<Chunk>> {
    let Some(per) = s.im2col_chunk(gpu) else {
        bail!("conv2d {}: the im2col path does not apply", s.describe());
    };
    Ok((0..s.n).step_by(per).map(|first| Chunk { first, conv: Conv2d { n: per.min(s.n - first), ..*s } }).collect())
}

/// The im2col matrix of `x`: [n, kp, ho*wo].
fn cols(rec: &mut Recorder, s: &Conv2d, x: &Tensor) -> Result<Tensor> {
    let (ho, wo) = s.out_hw();
    let cols = Tensor::uninit_like(rec.gpu(), x, &[s.n, s.padded_taps(), ho * wo])?;
    let launch = Launch::threads(s.n * s.padded_taps() * ho, IM2COL.wg, wo);
    rec.dispatch(IM2COL, &s.params(Split::whole(1)), &[(1, Some(x)), (4, Some(&cols))], launch)?;
    Ok(cols)
}

/// The weight as [cout, kp], zero past the taps: the weight itself where
/// the taps are whole quads already.
fn padded_weight(rec: &mut Recorder, s: &Conv2d, w: &Tensor) -> Result<Tensor> {
    let kp = s.padded_taps();
    if kp == s.taps() {
        return w.reshape(&[s.cout, kp]);
    }
    let wp = Tensor::uninit(rec.gpu(), &[s.cout, kp])?;
    let launch = Launch::threads(s.cout * kp, PAD_WEIGHT.wg, 1);
    rec.dispatch(PAD_WEIGHT, &s.params(Split::whole(1)), &[(2, Some(w)), (4, Some(&wp))], launch)?;
    Ok(wp)
}

pub(super) fn forward(
    rec: &mut Recorder,
    s: &Conv2d,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    e: &Epilogue<Tensor>,
    y: &Tensor,
) -> Result<()> {
    let (kp, hw) = (s.padded_taps(), s.out_hw().0 * s.out_hw().1);
    let wp = padded_weight(rec, s, w)?;
    for part in chunks(rec.gpu(), s)? {
        let c = &part.conv;
        let cols = cols(rec, c, &part.of(rec.gpu(), x)?)?;
        let g = Gemm::plain(c.cout, hw, kp, c.n).a(0, kp, 1).b(kp * hw, hw, 1).c(c.cout * hw, hw, 1);
        g.finishing(b.is_some(), e, true).run_with(rec, &wp, &cols, b, e.slope(), &part.of(rec.gpu(), y)?)?;
    }
    Ok(())
}

/// dw of every chunk, the later ones added to the first's.
pub(super) fn backward_weight(rec: &mut Recorder, s: &Conv2d, x: &Tensor, dy: &Tensor, dw: &Tensor) -> Result<()> {
    let (kp, hw) = (s.padded_taps(), s.out_hw().0 * s.out_hw().1);
    for part in chunks(rec.gpu(), s)? {
        let c = &part.conv;
        let cols = cols(rec, c, &part.of(rec.gpu(), x)?)?;
        let g = Gemm::plain(c.cout, c.taps(), hw, c.n).a(c.cout * hw, hw, 1).b(kp * hw, 1, hw).c(0, c.taps(), 1);
        let g = if part.first > 0 { g.sum_batch().accumulate() } else { g.sum_batch() };
        g.run(rec, &part.of(rec.gpu(), dy)?, &cols, None, dw)?;
    }
    Ok(())
}

pub(super) fn backward_input(rec: &mut Recorder, s: &Conv2d, w: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<()> {
    let (kp, hw) = (s.padded_taps(), s.out_hw().0 * s.out_hw().1);
    let wp = padded_weight(rec, s, w)?;
    let k = if s.stride == 1 { COL2IM_S1 } else { COL2IM };
    for part in chunks(rec.gpu(), s)? {
        let c = &part.conv;
        let dcols = Tensor::uninit(rec.gpu(), &[c.n, kp, hw])?;
        let g = Gemm::plain(kp, hw, c.cout, c.n).a(0, 1, kp).b(c.cout * hw, hw, 1).c(kp * hw, hw, 1);
        g.run(rec, &wp, &part.of(rec.gpu(), dy)?, None, &dcols)?;
        let launch = Launch::threads(c.n * c.cin * c.h, k.wg, c.w * c.kh * c.kw);
        let dxv = part.of(rec.gpu(), dx)?;
        rec.dispatch(k, &c.params(Split::whole(1)), &[(5, Some(&dcols)), (6, Some(&dxv))], launch)?;
    }
    Ok(())
}
