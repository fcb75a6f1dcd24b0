//! 2-D convolution (NCHW, grouped, optional bias): forward and the gradients
//! for input, weight and bias.
//!
//! Three GPU paths, all checked against the same reference:
//! - `Path::Direct`: `shaders/conv2d.wgsl`, one output per invocation, any
//!   kernel size, stride, padding and groups: the slow-but-obvious kernel;
//! - `Path::Blocked`: the same loops producing 4 channels per invocation
//!   where a group's channels come in fours (and a whole row of taps of a
//!   weight gradient at most 3 wide per invocation), the direct kernel elsewhere;
//! - `Path::Gemm`: 1x1, stride 1, no padding, one group, which is a batched
//!   matrix multiply (`shaders/linear.wgsl`). MobileFaceNet spends most of
//!   its multiply-adds in these pointwise convolutions;
//! - `Path::Im2col` (`im2col`): the same product over an im2col matrix, for
//!   the other one-group convolutions on the CPU set (in chunks of images
//!   where the matrix would not fit a binding), the input gradient gathered
//!   back from the matrix's;
//! - `Path::Window` (`shaders/conv2d_subgroup.wgsl`), forward only: 3x3,
//!   stride 1, no padding, one group (MTCNN's convolutions) where subgroups
//!   hold 8 invocations: 8 outputs x 16 channels per invocation, the weights
//!   shared through the subgroup, no im2col matrix. The CPU set's forward
//!   pass takes it; its gradients take `Auto`'s path.
//!
//! On the GPU kernel set the direct weight gradients cut their (n, oy) rows
//! into slices summed by a second dispatch (`weight_split`); a network's
//! first layer asks for `backward_params` only (its input is the image).

//!
//! The reference is in `reference`, the checks and benchmark cases in
//! `checks`; depthwise convolution (`depthwise`) runs on the same kernels.

mod checks;
pub mod depthwise;
mod im2col;
mod reference;

pub use checks::check_shape;
pub(crate) use checks::{bench_shape, refcheck_shape};
pub use reference::{backward_ref, forward_ref};

use super::epilogue::Epilogue;
use super::linear::{epilogue_output, Gemm};
use super::{reduce, Family};
use crate::gpu::{Gpu, Kernel, KernelSet, Launch, Params, Recorder, Shader, Split, Tensor};
use anyhow::{bail, Result};

/// The gradients of a convolution for its input, weight and bias.
pub struct Grads<T = Tensor> {
    pub dx: T,
    pub dw: T,
    pub db: Option<T>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub bias: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Gemm where it applies, then (CPU set) Im2col, Blocked elsewhere.
    Auto,
    Direct,
    Blocked,
    Gemm,
    Im2col,
    Window,
}

impl Conv2d {
    /// A square-kernel convolution without bias, one group.
    pub fn new(n: usize, cin: usize, hw: (usize, usize), cout: usize, k: usize, stride: usize, pad: usize) -> Conv2d {
        Conv2d { n, cin, h: hw.0, w: hw.1, cout, kh: k, kw: k, stride, pad, groups: 1, bias: false }
    }

    /// The convolution of an (N, C, H, W) input `x` by an (O, C/groups, KH, KW)
    /// weight `w`, from their shapes.
    pub fn from_shapes(x: &[usize], w: &[usize], stride: usize, pad: usize, groups: usize, bias: bool) -> Conv2d {
        Conv2d { n: x[0], cin: x[1], h: x[2], w: x[3], cout: w[0], kh: w[2], kw: w[3], stride, pad, groups, bias }
    }

    pub fn out_hw(&self) -> (usize, usize) {
        ((self.h + 2 * self.pad - self.kh) / self.stride + 1, (self.w + 2 * self.pad - self.kw) / self.stride + 1)
    }

    pub fn validate(&self) -> Result<()> {
        if self.stride == 0
            || self.groups == 0
            || !self.cin.is_multiple_of(self.groups)
            || !self.cout.is_multiple_of(self.groups)
        {
            bail!("conv2d {}: channels must divide into groups and stride must be >= 1", self.describe());
        }
        if self.h + 2 * self.pad < self.kh || self.w + 2 * self.pad < self.kw {
            bail!("conv2d {}: kernel larger than the padded input", self.describe());
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        format!(
            "n{} {}->{} {}x{} k{}x{} s{} p{}{}{}",
            self.n,
            self.cin,
            self.cout,
            self.h,
            self.w,
            self.kh,
            self.kw,
            self.stride,
            self.pad,
            if self.groups > 1 { format!(" g{}", self.groups) } else { String::new() },
            if self.bias { " +bias" } else { "" }
        )
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.cin / self.groups, self.kh, self.kw]
    }

    pub fn output_shape(&self) -> [usize; 4] {
        let (ho, wo) = self.out_hw();
        [self.n, self.cout, ho, wo]
    }

    /// Whether the CPU set's row-walking depthwise kernels apply: 3x3,
    /// padding 1, stride 1 or 2, not asked for the direct path.
    fn walks_depthwise_rows(&self, set: KernelSet, path: Path) -> bool {
        let depthwise = self.groups == self.cin && self.cin == self.cout;
        set == KernelSet::Cpu
            && path != Path::Direct
            && depthwise
            && (self.kh, self.kw, self.pad) == (3, 3, 1)
            && (self.stride == 1 || self.stride == 2)
    }

    /// The row-walking kernel for the forward pass or the input gradient.
    fn depthwise_rows(&self, set: KernelSet, path: Path, input_grad: bool) -> Option<Kernel> {
        if !self.walks_depthwise_rows(set, path) {
            return None;
        }
        Some(match (self.stride, input_grad) {
            (1, false) => DEPTHWISE_ROWS_S1,
            (1, true) => DEPTHWISE_ROWS_INPUT_S1,
            (_, false) => DEPTHWISE_ROWS_S2,
            (_, true) => DEPTHWISE_ROWS_INPUT_S2,
        })
    }

    /// Whether the window kernel applies on `gpu`.
    pub(super) fn window_applies(&self, gpu: &Gpu) -> bool {
        gpu.subgroup_size == Some(8) && self.groups == 1 && (self.kh, self.kw, self.stride, self.pad) == (3, 3, 1, 0)
    }

    /// Whether `Auto` takes the window kernel on the CPU set: measured
    /// faster than im2col and the product for up to 32 input channels, on
    /// rows where at most a fifth of the 8-output blocks lies past the row
    /// (BENCHMARKS.md; MTCNN's layers on 9- and 8-wide maps with 28 and 64
    /// input channels were 1.2x and 1.6x slower).
    fn window_preferred(&self, gpu: &Gpu) -> bool {
        let wo = self.out_hw().1;
        gpu.kernels == KernelSet::Cpu
            && self.window_applies(gpu)
            && self.cin <= 32
            && 5 * wo >= 4 * wo.next_multiple_of(8)
    }

    fn gemm_applies(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0 && self.groups == 1
    }

    /// Multiply-adds of the forward pass (each backward direction costs the same).
    pub fn macs(&self) -> f64 {
        let (ho, wo) = self.out_hw();
        (self.n * self.cout * ho * wo * (self.cin / self.groups) * self.kh * self.kw) as f64
    }

    /// The parameters of the direct kernels; `split` cuts the weight
    /// gradient's (n, oy) rows (`Split::whole` elsewhere).
    fn params(&self, split: Split) -> Params {
        self.params_with(split, 0, false)
    }

    fn params_with(&self, split: Split, act: usize, accumulate: bool) -> Params {
        let (ho, wo) = self.out_hw();
        Params::new()
            .u("n", self.n)
            .u("cin", self.cin)
            .u("h", self.h)
            .u("w", self.w)
            .u("cout", self.cout)
            .u("ho", ho)
            .u("wo", wo)
            .u("kh", self.kh)
            .u("kw", self.kw)
            .u("stride", self.stride)
            .u("pad", self.pad)
            .u("groups", self.groups)
            .u("has_bias", self.bias as usize)
            .u("slices", split.slices)
            .u("rows_per_slice", split.per_slice)
            .u("act", act)
            .u("accumulate", accumulate as usize)
    }

    /// `params` of a forward pass finishing its outputs with `e`.
    fn forward_params(&self, e: &Epilogue<Tensor>) -> Params {
        self.params_with(Split::whole(1), e.act_code(), e.skip.is_some())
    }

    /// How the weight gradient's reduction over (n, oy) rows is cut, for
    /// `outputs` invocations per slice.
    fn weight_split(&self, set: KernelSet, outputs: usize) -> Split {
        let (ho, wo) = self.out_hw();
        // Whole rows per slice, so the inner loop over ox stays whole.
        let rows = self.n * ho;
        let by_terms = Split::for_reduction(set, rows * wo, outputs);
        Split::slices(rows, by_terms.slices)
    }
}

// ---------------------------------------------------------------------- GPU

const FORWARD: Kernel = Kernel::new(Shader::Conv2d, "forward", 64);
const BACKWARD_INPUT: Kernel = Kernel::new(Shader::Conv2d, "backward_input", 64);
const BACKWARD_INPUT_S1: Kernel = Kernel::new(Shader::Conv2d, "backward_input_s1", 64);
const BACKWARD_WEIGHT: Kernel = Kernel::new(Shader::Conv2d, "backward_weight", 64);
const FORWARD_BLOCKED: Kernel = Kernel::new(Shader::Conv2d, "forward_blocked", 64);
const BACKWARD_INPUT_BLOCKED: Kernel = Kernel::new(Shader::Conv2d, "backward_input_blocked", 64);
const BACKWARD_WEIGHT_BLOCKED: Kernel = Kernel::new(Shader::Conv2d, "backward_weight_blocked", 64);
/// The CPU set's depthwise 3x3 (padding 1): one invocation per output row.
const DEPTHWISE_ROWS_S1: Kernel = Kernel::new(Shader::Conv2d, "depthwise_rows_s1", 16);
const DEPTHWISE_ROWS_S2: Kernel = Kernel::new(Shader::Conv2d, "depthwise_rows_s2", 16);
const DEPTHWISE_ROWS_INPUT_S1: Kernel = Kernel::new(Shader::Conv2d, "depthwise_rows_input_s1", 16);
const DEPTHWISE_ROWS_INPUT_S2: Kernel = Kernel::new(Shader::Conv2d, "depthwise_rows_input_s2", 16);
/// Its weight gradient: one invocation per (image, channel) plane.
const DEPTHWISE_WEIGHT_ROWS_S1: Kernel = Kernel::new(Shader::Conv2d, "depthwise_weight_rows_s1", 16);
const DEPTHWISE_WEIGHT_ROWS_S2: Kernel = Kernel::new(Shader::Conv2d, "depthwise_weight_rows_s2", 16);
/// 8 outputs x 16 channels per invocation, weights broadcast in subgroups of 8.
const WINDOW_SG: Kernel = Kernel::new(Shader::Conv2dSubgroup, "conv3x3_window_sg", 16);

/// The path of a forward pass: the window kernel where `Auto` prefers it,
/// else `path_for`'s.
fn forward_path(s: &Conv2d, path: Path, gpu: &Gpu) -> Result<Path> {
    match path {
        Path::Auto if s.window_preferred(gpu) => Ok(Path::Window),
        Path::Window if !s.window_applies(gpu) => bail!(
            "conv2d {}: the window path needs 3x3, stride 1, no padding, one group and subgroups of 8",
            s.describe()
        ),
        Path::Window => Ok(Path::Window),
        p => path_for(s, p, gpu),
    }
}

/// The path of every direction but the forward pass (which has the window
/// kernel too: `forward_path`).
fn path_for(s: &Conv2d, path: Path, gpu: &Gpu) -> Result<Path> {
    Ok(match path {
        // The window kernel is forward only: the gradients take Auto's path.
        Path::Window => path_for(s, Path::Auto, gpu)?,
        Path::Auto if s.gemm_applies() => Path::Gemm,
        Path::Auto if s.im2col_preferred(gpu) => Path::Im2col,
        Path::Auto => Path::Blocked,
        Path::Gemm if !s.gemm_applies() => {
            bail!("conv2d {}: the gemm path needs 1x1, stride 1, no padding, one group", s.describe())
        }
        Path::Im2col if s.im2col_chunk(gpu).is_none() => {
            bail!(
                "conv2d {}: the im2col path needs one group and one image's im2col matrix within a binding",
                s.describe()
            )
        }
        p => p,
    })
}

/// The three matrix products of a pointwise convolution, per image:
/// y = W x, dx = W^T dy, dW = sum over images of dy x^T.
fn pointwise_forward(s: &Conv2d, e: &Epilogue<Tensor>) -> Gemm {
    let hw = s.h * s.w;
    let g = Gemm::plain(s.cout, hw, s.cin, s.n).a(0, s.cin, 1).b(s.cin * hw, hw, 1).c(s.cout * hw, hw, 1);
    g.finishing(s.bias, e, true)
}

fn pointwise_backward_input(s: &Conv2d) -> Gemm {
    let hw = s.h * s.w;
    Gemm::plain(s.cin, hw, s.cout, s.n).a(0, 1, s.cin).b(s.cout * hw, hw, 1).c(s.cin * hw, hw, 1)
}
fn pointwise_backward_weight(s: &Conv2d) -> Gemm {
    let hw = s.h * s.w;
    Gemm::plain(s.cout, s.cin, hw, s.n).a(s.cout * hw, hw, 1).b(s.cin * hw, 1, hw).c(0, s.cin, 1).sum_batch()
}

pub fn forward(
    rec: &mut Recorder,
    s: &Conv2d,
    path: Path,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor> {
    forward_with(rec, s, path, x, w, b, &Epilogue::none())
}

/// `forward` finishing each output with the epilogue `e`, on every path.
pub fn forward_with(
    rec: &mut Recorder,
    s: &Conv2d,
    path: Path,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    e: &Epilogue<Tensor>,
) -> Result<Tensor> {
    s.validate()?;
    if s.bias != b.is_some() {
        bail!("conv2d {}: a bias tensor must be given exactly when the layer has a bias", s.describe());
    }
    let y = epilogue_output(rec, x, &s.output_shape(), e)?;
    let slope = e.slope();
    match forward_path(s, path, rec.gpu())? {
        Path::Gemm => pointwise_forward(s, e).run_with(rec, w, x, b, slope, &y)?,
        Path::Im2col => im2col::forward(rec, s, x, w, b, e, &y)?,
        Path::Window => {
            let (ho, wo) = s.out_hw();
            let per_plane = ho * wo.div_ceil(8);
            let groups = s.n * s.cout.div_ceil(16) * per_plane.div_ceil(WINDOW_SG.wg as usize);
            let args = [(1, Some(x)), (2, Some(w)), (3, b), (4, Some(&y)), (8, slope)];
            // Loop trips: (channel, kernel row) pairs, then 8 stores for each of 16 channels.
            let serial = 4 * s.cin + 16 * 8;
            rec.dispatch(WINDOW_SG, &s.forward_params(e), &args, Launch::groups(groups, serial))?
        }
        p => {
            let args = [(1, Some(x)), (2, Some(w)), (3, b), (4, Some(&y)), (8, slope)];
            let prm = s.forward_params(e);
            let taps = s.cin / s.groups * s.kh * s.kw;
            if let Some(k) = s.depthwise_rows(rec.gpu().kernels, p, false) {
                // (every buffer the shared row walker names is bound)
                let args = [(1, Some(x)), (2, Some(w)), (3, b), (4, Some(&y)), (5, None), (6, None), (8, slope)];
                let (ho, wo) = s.out_hw();
                rec.dispatch(k, &prm, &args, Launch::threads(s.n * s.cout * ho, k.wg, wo.div_ceil(4)))?
            } else if p == Path::Blocked && (s.cout / s.groups).is_multiple_of(4) {
                rec.dispatch(FORWARD_BLOCKED, &prm, &args, Launch::threads(y.numel() / 4, FORWARD_BLOCKED.wg, taps))?
            } else {
                rec.dispatch(FORWARD, &prm, &args, Launch::threads(y.numel(), FORWARD.wg, taps))?
            }
        }
    }
    Ok(y)
}

pub fn backward(
    rec: &mut Recorder,
    s: &Conv2d,
    path: Path,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<Grads<Tensor>> {
    let (dw, db) = backward_params(rec, s, path, x, dy)?;
    let dx = Tensor::zeros_as(rec.gpu(), &x.shape, x.dtype)?;
    match path_for(s, path, rec.gpu())? {
        Path::Gemm => pointwise_backward_input(s).run(rec, w, dy, None, &dx)?,
        Path::Im2col => im2col::backward_input(rec, s, w, dy, &dx)?,
        p => {
            let blocked = p == Path::Blocked;
            let args = [(2, Some(w)), (5, Some(dy)), (6, Some(&dx))];
            let prm = s.params(Split::whole(1));
            let taps = s.cout / s.groups * s.kh * s.kw;
            if let Some(k) = s.depthwise_rows(rec.gpu().kernels, p, true) {
                // (the stride-2 walker writes dx only; the others name y too)
                let args = [(1, None), (2, Some(w)), (5, Some(dy)), (6, Some(&dx)), (3, None), (4, None), (8, None)];
                let args = if k == DEPTHWISE_ROWS_INPUT_S2 { &args[..4] } else { &args[..] };
                rec.dispatch(k, &prm, args, Launch::threads(s.n * s.cin * s.h, k.wg, s.w.div_ceil(4)))?;
            } else if blocked && (s.cin / s.groups).is_multiple_of(4) {
                let k = BACKWARD_INPUT_BLOCKED;
                rec.dispatch(k, &prm, &args, Launch::threads(dx.numel() / 4, k.wg, taps))?;
            } else {
                let k = if s.stride == 1 { BACKWARD_INPUT_S1 } else { BACKWARD_INPUT };
                rec.dispatch(k, &prm, &args, Launch::threads(dx.numel(), k.wg, taps))?;
            }
        }
    }
    Ok(Grads { dx, dw, db })
}

/// The weight and bias gradients alone (`backward` without the input's).
pub fn backward_params(
    rec: &mut Recorder,
    s: &Conv2d,
    path: Path,
    x: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Option<Tensor>)> {
    s.validate()?;
    let dw = Tensor::zeros(rec.gpu(), &s.weight_shape())?;
    match path_for(s, path, rec.gpu())? {
        Path::Gemm => pointwise_backward_weight(s).run(rec, dy, x, None, &dw)?,
        Path::Im2col => im2col::backward_weight(rec, s, x, dy, &dw)?,
        p if s.walks_depthwise_rows(rec.gpu().kernels, p) => depthwise_weight_rows(rec, s, x, dy, &dw)?,
        p => direct_weight_grad(rec, s, p == Path::Blocked && s.kw <= 3, x, dy, &dw)?,
    }
    let (ho, wo) = s.out_hw();
    let db = if s.bias { Some(reduce::channel_sum(rec, dy, s.n, s.cout, ho * wo)?) } else { None };
    Ok((dw, db))
}

/// dw of the direct kernels: one invocation per weight (or, `by_tap_row`,
/// per row of at most 3 taps) and slice of the (n, oy) rows; sliced
/// partials are summed by a second dispatch.
fn direct_weight_grad(
    rec: &mut Recorder,
    s: &Conv2d,
    by_tap_row: bool,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
) -> Result<()> {
    let (k, outputs) = if by_tap_row {
        (BACKWARD_WEIGHT_BLOCKED, s.cout * s.cin / s.groups * s.kh)
    } else {
        (BACKWARD_WEIGHT, dw.numel())
    };
    let split = s.weight_split(rec.gpu().kernels, outputs);
    let wo = s.out_hw().1;
    let launch = Launch::threads(outputs * split.slices, k.wg, split.per_slice * wo);
    if !split.is_split() {
        return rec.dispatch(k, &s.params(split), &[(1, Some(x)), (5, Some(dy)), (7, Some(dw))], launch);
    }
    let parts = Tensor::uninit(rec.gpu(), &[split.slices, dw.numel()])?;
    rec.dispatch(k, &s.params(split), &[(1, Some(x)), (5, Some(dy)), (7, Some(&parts))], launch)?;
    reduce::sum_slices(rec, &parts, dw)
}

/// dw of the depthwise row walker: one partial gradient per image, summed.
fn depthwise_weight_rows(rec: &mut Recorder, s: &Conv2d, x: &Tensor, dy: &Tensor, dw: &Tensor) -> Result<()> {
    let k = if s.stride == 1 { DEPTHWISE_WEIGHT_ROWS_S1 } else { DEPTHWISE_WEIGHT_ROWS_S2 };
    let (ho, wo) = s.out_hw();
    let parts = Tensor::uninit(rec.gpu(), &[s.n, dw.numel()])?;
    let launch = Launch::threads(s.n * s.cout, k.wg, ho * wo.div_ceil(4));
    rec.dispatch(k, &s.params(Split::whole(1)), &[(1, Some(x)), (5, Some(dy)), (7, Some(&parts))], launch)?;
    reduce::sum_slices(rec, &parts, dw)
}

pub const FAMILY: Family =
    Family { name: "conv2d", gradcheck: checks::gradcheck, refcheck: checks::refcheck, bench: checks::bench };
