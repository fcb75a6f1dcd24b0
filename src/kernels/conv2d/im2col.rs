//! Convolutions (one group, not 1x1) as matrix products over an im2col
//! matrix, for the CPU kernel set: the direct kernels load a weight and an
//! input per multiply-add (4 channels per invocation where blocked), while
//! the product shares rows of the weight and reads the taps as a contiguous
//! K in quads. It pays one load and one store per im2col entry, which the
//! product then reads once per output channel (BENCHMARKS.md, "im2col").
//!
//! Per image, `cols` is [kp, ho*wo] (kp = the taps rounded up to 4, extra
//! rows zero): y = W' cols, with W' the weight padded to kp columns,
//! dW = sum over images of dy cols^T, and dx gathers dcols = W'^T dy back
//! onto the image (col2im).

use super::Conv2d;
use crate::gpu::{Kernel, KernelSet, Launch, Recorder, Shader, Split, Tensor};
use crate::kernels::linear::Gemm;
use anyhow::Result;

const IM2COL: Kernel = Kernel::new(Shader::Conv2d, "im2col", 64);
const PAD_WEIGHT: Kernel = Kernel::new(Shader::Conv2d, "pad_weight", 64);
const COL2IM: Kernel = Kernel::new(Shader::Conv2d, "col2im", 64);
const COL2IM_S1: Kernel = Kernel::new(Shader::Conv2d, "col2im_s1", 64);

/// `cols` stays well inside a 128 MiB storage binding (MiniNetwork's stem
/// at batch 32 needs 11.2 M floats); larger batches take the direct kernels.
const MAX_COLS: usize = 1 << 24;

impl Conv2d {
    fn taps(&self) -> usize {
        self.cin / self.groups * self.kh * self.kw
    }

    /// Rows of `cols`: the taps rounded up to whole quads.
    fn padded_taps(&self) -> usize {
        self.taps().next_multiple_of(4)
    }

    fn cols_len(&self) -> usize {
        let (ho, wo) = self.out_hw();
        self.n * self.padded_taps() * ho * wo
    }

    /// Whether the path applies at all: one group, and `cols` not too large.
    pub(super) fn im2col_fits(&self) -> bool {
        self.groups == 1 && self.cols_len() <= MAX_COLS
    }

    /// Whether `Path::Auto` takes it: the CPU set, not a 1x1 (that is a
    /// product already).
    pub(super) fn im2col_preferred(&self, set: KernelSet) -> bool {
        set == KernelSet::Cpu && self.im2col_fits() && !self.gemm_applies()
    }
}

/// The im2col matrix of `x`: [n, kp, ho*wo].
fn cols(rec: &mut Recorder, s: &Conv2d, x: &Tensor) -> Result<Tensor> {
    let (ho, wo) = s.out_hw();
    let cols = Tensor::uninit(rec.gpu(), &[s.n, s.padded_taps(), ho * wo])?;
    let launch = Launch::threads(s.n * s.padded_taps() * ho, IM2COL.wg, wo);
    rec.dispatch(IM2COL, &s.params(Split::whole(1)), &[(1, Some(x)), (4, Some(&cols))], launch)?;
    Ok(cols)
}

/// The weight as [cout, kp], zero past the taps.
fn padded_weight(rec: &mut Recorder, s: &Conv2d, w: &Tensor) -> Result<Tensor> {
    let kp = s.padded_taps();
    let wp = Tensor::uninit(rec.gpu(), &[s.cout, kp])?;
    let launch = Launch::threads(s.cout * kp, PAD_WEIGHT.wg, 1);
    rec.dispatch(PAD_WEIGHT, &s.params(Split::whole(1)), &[(2, Some(w)), (4, Some(&wp))], launch)?;
    Ok(wp)
}

pub(super) fn forward(rec: &mut Recorder, s: &Conv2d, x: &Tensor, w: &Tensor, b: Option<&Tensor>, y: &Tensor) -> Result<()> {
    let (kp, hw) = (s.padded_taps(), s.out_hw().0 * s.out_hw().1);
    let cols = cols(rec, s, x)?;
    let wp = padded_weight(rec, s, w)?;
    let g = Gemm::plain(s.cout, hw, kp, s.n).a(0, kp, 1).b(kp * hw, hw, 1).c(s.cout * hw, hw, 1);
    let g = if b.is_some() { g.bias_per_row() } else { g };
    g.run(rec, &wp, &cols, b, y)
}

pub(super) fn backward_weight(rec: &mut Recorder, s: &Conv2d, x: &Tensor, dy: &Tensor, dw: &Tensor) -> Result<()> {
    let (kp, hw) = (s.padded_taps(), s.out_hw().0 * s.out_hw().1);
    let cols = cols(rec, s, x)?;
    let g = Gemm::plain(s.cout, s.taps(), hw, s.n).a(s.cout * hw, hw, 1).b(kp * hw, 1, hw).c(0, s.taps(), 1);
    g.sum_batch().run(rec, dy, &cols, None, dw)
}

pub(super) fn backward_input(rec: &mut Recorder, s: &Conv2d, w: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<()> {
    let (kp, hw) = (s.padded_taps(), s.out_hw().0 * s.out_hw().1);
    let wp = padded_weight(rec, s, w)?;
    let dcols = Tensor::uninit(rec.gpu(), &[s.n, kp, hw])?;
    let g = Gemm::plain(kp, hw, s.cout, s.n).a(0, 1, kp).b(s.cout * hw, hw, 1).c(kp * hw, hw, 1);
    g.run(rec, &wp, dy, None, &dcols)?;
    let k = if s.stride == 1 { COL2IM_S1 } else { COL2IM };
    let launch = Launch::threads(s.n * s.cin * s.h, k.wg, s.w * s.kh * s.kw);
    rec.dispatch(k, &s.params(Split::whole(1)), &[(5, Some(&dcols)), (6, Some(dx))], launch)
}
