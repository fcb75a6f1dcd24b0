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
//!   matrix multiply (`shaders/matmul.wgsl`). MobileFaceNet spends most of
//!   its multiply-adds in these pointwise convolutions.

use super::{linear::Gemm, reduce, upload, Family};
use crate::bench::BenchCase;
use crate::check::{compare_f32, finite_diff, widen, CheckRow, Rng, Tol};
use crate::gpu::{groups, Gpu, Kernel, Params, Recorder, Shader, Tensor};
use anyhow::{bail, Result};

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
    /// Gemm where it applies, Blocked elsewhere.
    Auto,
    Direct,
    Blocked,
    Gemm,
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

    fn gemm_applies(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0 && self.groups == 1
    }

    /// Multiply-adds of the forward pass (each backward direction costs the same).
    pub fn macs(&self) -> f64 {
        let (ho, wo) = self.out_hw();
        (self.n * self.cout * ho * wo * (self.cin / self.groups) * self.kh * self.kw) as f64
    }

    fn params(&self) -> Params {
        let (ho, wo) = self.out_hw();
        Params::new()
            .u(self.n)
            .u(self.cin)
            .u(self.h)
            .u(self.w)
            .u(self.cout)
            .u(ho)
            .u(wo)
            .u(self.kh)
            .u(self.kw)
            .u(self.stride)
            .u(self.pad)
            .u(self.groups)
            .u(self.bias as usize)
    }
}

// ---------------------------------------------------------------- reference

/// Visits every multiply of the convolution once, in the plain loop order:
/// `f(y_index, x_index, w_index)`. Taps in the padding are
/// skipped. Forward and backward references are both written on it.
fn for_each_tap(s: &Conv2d, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = s.out_hw();
    let (cin_g, cout_g) = (s.cin / s.groups, s.cout / s.groups);
    for n in 0..s.n {
        for co in 0..s.cout {
            let g = co / cout_g;
            for oy in 0..ho {
                for ox in 0..wo {
                    let yi = ((n * s.cout + co) * ho + oy) * wo + ox;
                    for ci in 0..cin_g {
                        let c = g * cin_g + ci;
                        for ky in 0..s.kh {
                            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                            if iy < 0 || iy >= s.h as isize {
                                continue;
                            }
                            for kx in 0..s.kw {
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                if ix < 0 || ix >= s.w as isize {
                                    continue;
                                }
                                let xi = ((n * s.cin + c) * s.h + iy as usize) * s.w + ix as usize;
                                f(yi, xi, ((co * cin_g + ci) * s.kh + ky) * s.kw + kx);
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn forward_ref(s: &Conv2d, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let [n, c, ho, wo] = s.output_shape();
    let mut y: Vec<f64> = (0..n * c * ho * wo).map(|i| b.map_or(0.0, |b| b[(i / (ho * wo)) % c])).collect();
    for_each_tap(s, |yi, xi, wi| y[yi] += x[xi] * w[wi]);
    y
}

pub struct Grads<T = Tensor> {
    pub dx: T,
    pub dw: T,
    pub db: Option<T>,
}

/// Scatter form (the transpose of the forward loops): an independent
/// formulation from the GPU's gather kernels.
pub fn backward_ref(s: &Conv2d, x: &[f64], w: &[f64], dy: &[f64]) -> Grads<Vec<f64>> {
    let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
    for_each_tap(s, |yi, xi, wi| {
        dx[xi] += dy[yi] * w[wi];
        dw[wi] += dy[yi] * x[xi];
    });
    let [n, c, ho, wo] = s.output_shape();
    let db =
        (0..c).map(|co| (0..n).map(|b| dy[(b * c + co) * ho * wo..][..ho * wo].iter().sum::<f64>()).sum()).collect();
    Grads { dx, dw, db: s.bias.then_some(db) }
}

// ---------------------------------------------------------------------- GPU

const FORWARD: Kernel = Kernel::new(Shader::Conv2d, "forward", 64);
const BACKWARD_INPUT: Kernel = Kernel::new(Shader::Conv2d, "backward_input", 64);
const BACKWARD_WEIGHT: Kernel = Kernel::new(Shader::Conv2d, "backward_weight", 64);
const FORWARD_BLOCKED: Kernel = Kernel::new(Shader::Conv2d, "forward_blocked", 64);
const BACKWARD_INPUT_BLOCKED: Kernel = Kernel::new(Shader::Conv2d, "backward_input_blocked", 64);
const BACKWARD_WEIGHT_BLOCKED: Kernel = Kernel::new(Shader::Conv2d, "backward_weight_blocked", 64);

fn path_for(s: &Conv2d, path: Path) -> Result<Path> {
    Ok(match path {
        Path::Auto if s.gemm_applies() => Path::Gemm,
        Path::Auto => Path::Blocked,
        Path::Gemm if !s.gemm_applies() => {
            bail!("conv2d {}: the gemm path needs 1x1, stride 1, no padding, one group", s.describe())
        }
        p => p,
    })
}

/// The three matrix products of a pointwise convolution, per image:
/// y = W x, dx = W^T dy, dW = sum over images of dy x^T.
fn pointwise_forward(s: &Conv2d) -> Gemm {
    let hw = s.h * s.w;
    let g = Gemm::plain(s.cout, hw, s.cin, s.n).a(0, s.cin, 1).b(s.cin * hw, hw, 1).c(s.cout * hw, hw, 1);
    if s.bias {
        g.bias_per_row()
    } else {
        g
    }
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
    s.validate()?;
    if s.bias != b.is_some() {
        bail!("conv2d {}: a bias tensor must be given exactly when the layer has a bias", s.describe());
    }
    let y = Tensor::zeros(rec.gpu(), &s.output_shape())?;
    match path_for(s, path)? {
        Path::Gemm => pointwise_forward(s).run(rec, w, x, b, &y)?,
        p => {
            let args = [(1, Some(x)), (2, Some(w)), (3, b), (4, Some(&y))];
            if p == Path::Blocked && (s.cout / s.groups).is_multiple_of(4) {
                rec.dispatch(FORWARD_BLOCKED, &s.params(), &args, groups(y.numel() / 4, FORWARD_BLOCKED.wg))?
            } else {
                rec.dispatch(FORWARD, &s.params(), &args, groups(y.numel(), FORWARD.wg))?
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
    s.validate()?;
    let gpu = rec.gpu();
    let dx = Tensor::zeros(gpu, &x.shape)?;
    let dw = Tensor::zeros(gpu, &s.weight_shape())?;
    match path_for(s, path)? {
        Path::Gemm => {
            pointwise_backward_input(s).run(rec, w, dy, None, &dx)?;
            pointwise_backward_weight(s).run(rec, dy, x, None, &dw)?;
        }
        p => {
            let blocked = p == Path::Blocked;
            let args = [(1, Some(x)), (5, Some(dy)), (7, Some(&dw))];
            if blocked && s.kw <= 3 {
                let k = BACKWARD_WEIGHT_BLOCKED;
                rec.dispatch(k, &s.params(), &args, groups(s.cout * s.cin / s.groups * s.kh, k.wg))?;
            } else {
                rec.dispatch(BACKWARD_WEIGHT, &s.params(), &args, groups(dw.numel(), BACKWARD_WEIGHT.wg))?;
            }
            let args = [(2, Some(w)), (5, Some(dy)), (6, Some(&dx))];
            if blocked && (s.cin / s.groups).is_multiple_of(4) {
                let k = BACKWARD_INPUT_BLOCKED;
                rec.dispatch(k, &s.params(), &args, groups(dx.numel() / 4, k.wg))?;
            } else {
                rec.dispatch(BACKWARD_INPUT, &s.params(), &args, groups(dx.numel(), BACKWARD_INPUT.wg))?;
            }
        }
    }
    let (ho, wo) = s.out_hw();
    let db = if s.bias { Some(reduce::channel_sum(rec, dy, s.n, s.cout, ho * wo)?) } else { None };
    Ok(Grads { dx, dw, db })
}

// ------------------------------------------------------------------- checks

/// Fixed shapes cover every kernel size and stride the issue names, odd and
/// prime sizes and thread counts that are not multiples of the workgroup;
/// one more shape is drawn from the seed.
fn shapes(rng: &mut Rng) -> Vec<Conv2d> {
    let c = |n, cin, h, w, cout, k, stride, pad, groups, bias| Conv2d {
        n,
        cin,
        h,
        w,
        cout,
        kh: k,
        kw: k,
        stride,
        pad,
        groups,
        bias,
    };
    vec![
        c(2, 3, 13, 11, 5, 3, 2, 1, 1, true),
        c(1, 4, 7, 7, 6, 7, 1, 3, 1, false),
        c(3, 5, 9, 10, 7, 2, 2, 0, 1, true),
        c(2, 6, 5, 7, 4, 3, 1, 2, 2, false),
        c(2, 7, 6, 5, 11, 1, 1, 0, 1, true),
        c(2, 3, 17, 13, 8, 3, 2, 0, 1, false),
        // MobileFaceNet's stem at full size: long per-invocation reductions
        // (a blocked weight-gradient kernel once failed only at this size)
        c(2, 3, 112, 112, 8, 3, 2, 1, 1, false),
        // channels in fours: the blocked kernels in every direction
        c(2, 8, 9, 7, 12, 3, 1, 1, 1, true),
        c(1, 8, 11, 10, 8, 3, 2, 1, 2, false),
        c(3, 4, 6, 5, 4, 2, 2, 0, 1, false),
        c(
            rng.range(1, 3),
            rng.range(1, 6),
            rng.range(5, 17),
            rng.range(5, 17),
            rng.range(1, 9),
            3,
            rng.range(1, 2),
            rng.range(0, 2),
            1,
            true,
        ),
    ]
}

/// Runs forward and backward of one shape on the GPU and against the
/// reference; shared with the depthwise family.
pub(crate) fn check_shape(gpu: &Gpu, rng: &mut Rng, name: &str, s: &Conv2d, path: Path) -> Result<Vec<CheckRow>> {
    let [co, cig, kh, kw] = s.weight_shape();
    let xs = rng.uniform(s.n * s.cin * s.h * s.w, -1.0, 1.0);
    let ws = rng.uniform(co * cig * kh * kw, -0.5, 0.5);
    let bs = rng.uniform(s.cout, -0.5, 0.5);
    let dys = rng.uniform(s.output_shape().iter().product(), -1.0, 1.0);
    let x = upload(gpu, &xs, &[s.n, s.cin, s.h, s.w])?;
    let w = upload(gpu, &ws, &s.weight_shape())?;
    let b = upload(gpu, &bs, &[s.cout])?;
    let dy = upload(gpu, &dys, &s.output_shape())?;
    let mut rec = Recorder::new(gpu);
    let y = forward(&mut rec, s, path, &x, &w, s.bias.then_some(&b))?;
    let g = backward(&mut rec, s, path, &x, &w, &dy)?;
    rec.submit();
    let (xr, wr, br) = (widen(&xs), widen(&ws), widen(&bs));
    let yr = forward_ref(s, &xr, &wr, s.bias.then_some(&br[..]));
    let gr = backward_ref(s, &xr, &wr, &widen(&dys));
    let tag = match path {
        Path::Gemm => " [gemm]",
        Path::Blocked => " [blocked]",
        _ => "",
    };
    let shape = format!("{}{tag}", s.describe());
    let mut rows = vec![
        compare_f32(name, "forward", &shape, &y.to_vec(gpu), &yr, Tol::FORWARD),
        compare_f32(name, "backward input", &shape, &g.dx.to_vec(gpu), &gr.dx, Tol::BACKWARD),
        compare_f32(name, "backward weight", &shape, &g.dw.to_vec(gpu), &gr.dw, Tol::BACKWARD),
    ];
    if let (Some(db), Some(dbr)) = (&g.db, &gr.db) {
        rows.push(compare_f32(name, "backward bias", &shape, &db.to_vec(gpu), dbr, Tol::BACKWARD));
    }
    Ok(rows)
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for s in shapes(rng) {
        rows.extend(check_shape(gpu, rng, "conv2d", &s, Path::Direct)?);
        rows.extend(check_shape(gpu, rng, "conv2d", &s, Path::Blocked)?);
        if s.gemm_applies() {
            rows.extend(check_shape(gpu, rng, "conv2d", &s, Path::Gemm)?);
        }
    }
    Ok(rows)
}

/// Finite-difference check of `backward_ref` for one shape (shared with depthwise).
pub(crate) fn refcheck_shape(rng: &mut Rng, name: &str, s: &Conv2d) -> Vec<CheckRow> {
    let x = widen(&rng.uniform(s.n * s.cin * s.h * s.w, -1.0, 1.0));
    let w = widen(&rng.uniform(s.weight_shape().iter().product(), -1.0, 1.0));
    let b = widen(&rng.uniform(s.cout, -1.0, 1.0));
    let dy = widen(&rng.uniform(s.output_shape().iter().product(), -1.0, 1.0));
    let s = *s;
    let fwd = move |v: &[Vec<f64>]| forward_ref(&s, &v[0], &v[1], s.bias.then_some(&v[2][..]));
    let bwd = move |v: &[Vec<f64>], dy: &[f64]| {
        let g = backward_ref(&s, &v[0], &v[1], dy);
        vec![g.dx, g.dw, g.db.unwrap_or_default()]
    };
    let names = ["x", "w", if s.bias { "b" } else { "" }];
    finite_diff(name, &s.describe(), &names, &[x, w, b], &dy, &fwd, &bwd, rng)
}

fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    shapes(rng).iter().flat_map(|s| refcheck_shape(rng, "conv2d", s)).collect()
}

// -------------------------------------------------------------------- bench

/// Benchmark cases for one convolution shape (shared with depthwise).
pub(crate) fn bench_shape(gpu: &Gpu, label: &str, s: Conv2d) -> Result<Vec<BenchCase>> {
    let x = Tensor::zeros(gpu, &[s.n, s.cin, s.h, s.w])?;
    let w = Tensor::zeros(gpu, &s.weight_shape())?;
    let b = Tensor::zeros(gpu, &[s.cout])?;
    let dy = Tensor::zeros(gpu, &s.output_shape())?;
    let io = 4.0 * (x.numel() + w.numel() + dy.numel()) as f64;
    let flops = 2.0 * s.macs();
    let shape = s.describe();
    let (x2, w2) = (x.clone(), w.clone());
    Ok(vec![
        BenchCase::new(label, "forward", &shape, flops, io, move |rec| {
            forward(rec, &s, Path::Auto, &x, &w, s.bias.then_some(&b)).map(drop)
        }),
        BenchCase::new(label, "backward", &shape, 2.0 * flops, 2.0 * io, move |rec| {
            backward(rec, &s, Path::Auto, &x2, &w2, &dy).map(drop)
        }),
    ])
}

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let mut cases = Vec::new();
    // MobileFaceNet: the stem, an expansion 1x1 and the 1x1 to 512.
    cases.extend(bench_shape(gpu, "conv2d", Conv2d::new(batch, 3, (112, 112), 64, 3, 2, 1))?);
    cases.extend(bench_shape(gpu, "conv2d 1x1", Conv2d::new(batch, 64, (28, 28), 128, 1, 1, 0))?);
    cases.extend(bench_shape(gpu, "conv2d 1x1", Conv2d::new(batch, 128, (7, 7), 512, 1, 1, 0))?);
    // MiniNetwork's first two convolutions at 112x112 (the third exceeds a
    // 128 MiB binding at batch 32; the models issue splits the batch).
    for (cin, cout) in [(3, 32), (32, 64)] {
        let mini = Conv2d { bias: true, ..Conv2d::new(batch, cin, (112, 112), cout, 3, 1, 1) };
        cases.extend(bench_shape(gpu, "conv2d", mini)?);
    }
    Ok(cases)
}

pub const FAMILY: Family = Family { name: "conv2d", gradcheck, refcheck, bench };
