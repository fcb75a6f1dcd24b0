//! 2-D max pooling (square window, stride, padding, ceil mode) as MTCNN uses
//! it: forward, and the backward pass that recomputes each window's argmax.

use super::{upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, Launch, Params, Recorder, Shader, Tensor};
use crate::kernels::check::{compare_f32, finite_diff, widen, CheckRow, Rng, Tol};
use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug)]
pub struct MaxPool {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ceil: bool,
}

/// PyTorch's pooling_output_shape: with ceil mode the last window may start
/// inside the input but run past it; it may not start in the right padding.
pub fn out_len(len: usize, k: usize, stride: usize, pad: usize, ceil: bool) -> usize {
    let span = len + 2 * pad - k;
    let mut out = if ceil { span.div_ceil(stride) } else { span / stride } + 1;
    if ceil && (out - 1) * stride >= len + pad {
        out -= 1;
    }
    out
}

impl MaxPool {
    pub fn out_hw(&self) -> (usize, usize) {
        (
            out_len(self.h, self.k, self.stride, self.pad, self.ceil),
            out_len(self.w, self.k, self.stride, self.pad, self.ceil),
        )
    }
    pub fn describe(&self) -> String {
        format!(
            "n{} c{} {}x{} k{} s{} p{}{}",
            self.n,
            self.c,
            self.h,
            self.w,
            self.k,
            self.stride,
            self.pad,
            if self.ceil { " ceil" } else { "" }
        )
    }
    fn validate(&self) -> Result<()> {
        if self.stride == 0 || self.h + 2 * self.pad < self.k || self.w + 2 * self.pad < self.k || 2 * self.pad > self.k
        {
            bail!("maxpool {}: needs stride >= 1, a window that fits, and pad <= k/2", self.describe());
        }
        Ok(())
    }
    fn params(&self) -> Params {
        let (ho, wo) = self.out_hw();
        Params::new()
            .u("n", self.n)
            .u("c", self.c)
            .u("h", self.h)
            .u("w", self.w)
            .u("ho", ho)
            .u("wo", wo)
            .u("k", self.k)
            .u("stride", self.stride)
            .u("pad", self.pad)
    }
}

// ---------------------------------------------------------------- reference

/// Output and, per output, the flat input index of its maximum (first in
/// row-major window order on ties, as PyTorch).
pub fn forward_ref(s: &MaxPool, x: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let (ho, wo) = s.out_hw();
    let (mut y, mut arg) = (Vec::new(), Vec::new());
    for plane in 0..s.n * s.c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut best = (f64::NEG_INFINITY, usize::MAX);
                for ky in 0..s.k {
                    for kx in 0..s.k {
                        let (iy, ix) = (
                            (oy * s.stride + ky) as isize - s.pad as isize,
                            (ox * s.stride + kx) as isize - s.pad as isize,
                        );
                        if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                            continue;
                        }
                        let i = (plane * s.h + iy as usize) * s.w + ix as usize;
                        if x[i] > best.0 || best.1 == usize::MAX {
                            best = (x[i], i);
                        }
                    }
                }
                y.push(best.0);
                arg.push(best.1);
            }
        }
    }
    (y, arg)
}

pub fn backward_ref(s: &MaxPool, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let (_, arg) = forward_ref(s, x);
    let mut dx = vec![0.0; x.len()];
    for (o, &i) in arg.iter().enumerate() {
        dx[i] += dy[o];
    }
    dx
}

// ---------------------------------------------------------------------- GPU

const FORWARD: Kernel = Kernel::new(Shader::MaxPool, "forward", 64);
const BACKWARD: Kernel = Kernel::new(Shader::MaxPool, "backward", 64);

pub fn forward(rec: &mut Recorder, s: &MaxPool, x: &Tensor) -> Result<Tensor> {
    s.validate()?;
    let (ho, wo) = s.out_hw();
    let y = Tensor::uninit_like(rec.gpu(), x, &[s.n, s.c, ho, wo])?;
    rec.dispatch(
        FORWARD,
        &s.params(),
        &[(1, Some(x)), (2, Some(&y))],
        Launch::threads(y.numel(), FORWARD.wg, s.k * s.k),
    )?;
    Ok(y)
}

pub fn backward(rec: &mut Recorder, s: &MaxPool, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    s.validate()?;
    let dx = Tensor::uninit_like(rec.gpu(), x, &x.shape)?;
    let args = [(1, Some(x)), (3, Some(dy)), (4, Some(&dx))];
    rec.dispatch(BACKWARD, &s.params(), &args, Launch::threads(dx.numel(), BACKWARD.wg, s.k * s.k))?;
    Ok(dx)
}

// ------------------------------------------------------------------- checks

fn shapes(rng: &mut Rng) -> Vec<MaxPool> {
    let m = |n, c, h, w, k, stride, pad, ceil| MaxPool { n, c, h, w, k, stride, pad, ceil };
    vec![
        m(2, 3, 11, 13, 3, 2, 0, true), // MTCNN's 3x3 s2 ceil pooling, odd sizes
        m(1, 4, 12, 12, 2, 2, 0, true), // P-Net's 2x2 s2
        m(2, 2, 9, 7, 3, 2, 1, false),
        m(1, 5, 8, 10, 3, 3, 1, true),
        m(rng.range(1, 3), rng.range(1, 5), rng.range(3, 20), rng.range(3, 20), 3, 2, 0, true),
    ]
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for s in shapes(rng) {
        let (ho, wo) = s.out_hw();
        let mut xs = rng.uniform(s.n * s.c * s.h * s.w, -1.0, 1.0);
        xs[1] = xs[0]; // a tie: the first maximum must win, as in PyTorch
        let dys = rng.uniform(s.n * s.c * ho * wo, -1.0, 1.0);
        let x = upload(gpu, &xs, &[s.n, s.c, s.h, s.w])?;
        let dy = upload(gpu, &dys, &[s.n, s.c, ho, wo])?;
        let mut rec = Recorder::new(gpu);
        let y = forward(&mut rec, &s, &x)?;
        let dx = backward(&mut rec, &s, &x, &dy)?;
        rec.submit();
        let xr = widen(&xs);
        rows.push(compare_f32(
            "maxpool",
            "forward",
            &s.describe(),
            &y.to_vec(gpu),
            &forward_ref(&s, &xr).0,
            Tol::FORWARD,
        ));
        rows.push(compare_f32(
            "maxpool",
            "backward input",
            &s.describe(),
            &dx.to_vec(gpu),
            &backward_ref(&s, &xr, &widen(&dys)),
            Tol::BACKWARD,
        ));
    }
    Ok(rows)
}

fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for s in shapes(rng) {
        let (ho, wo) = s.out_hw();
        // Distinct values (a shuffled ramp) so no window has a near-tie that
        // a finite-difference step could flip.
        let len = s.n * s.c * s.h * s.w;
        let mut x: Vec<f64> = (0..len).map(|i| i as f64 * 0.01).collect();
        for i in (1..len).rev() {
            x.swap(i, rng.index(i + 1));
        }
        let dy = widen(&rng.uniform(s.n * s.c * ho * wo, -1.0, 1.0));
        let fwd = |v: &[Vec<f64>]| forward_ref(&s, &v[0]).0;
        let bwd = |v: &[Vec<f64>], dy: &[f64]| vec![backward_ref(&s, &v[0], dy)];
        rows.extend(finite_diff("maxpool", &s.describe(), &["x"], &[x], &dy, &fwd, &bwd, rng));
    }
    rows
}

// -------------------------------------------------------------------- bench

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    // R-Net's first pooling on a batch of 24x24 crops.
    let s = MaxPool { n: batch, c: 28, h: 22, w: 22, k: 3, stride: 2, pad: 0, ceil: true };
    let (ho, wo) = s.out_hw();
    let x = Tensor::zeros(gpu, &[s.n, s.c, s.h, s.w])?;
    let dy = Tensor::zeros(gpu, &[s.n, s.c, ho, wo])?;
    let (n_in, n_out) = (x.numel() as f64, dy.numel() as f64);
    let x2 = x.clone();
    Ok(vec![
        BenchCase::new("maxpool", "forward", &s.describe(), 9.0 * n_out, 4.0 * (n_in + n_out), move |rec| {
            forward(rec, &s, &x).map(drop)
        }),
        BenchCase::new("maxpool", "backward", &s.describe(), 9.0 * n_in, 4.0 * (2.0 * n_in + n_out), move |rec| {
            backward(rec, &s, &x2, &dy).map(drop)
        }),
    ])
}

pub const FAMILY: Family = Family { name: "maxpool", gradcheck, refcheck, bench };
