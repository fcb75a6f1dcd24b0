//! SGD with momentum and weight decay, PyTorch semantics, on the GPU:
//! v = mu * v + g + wd * p; p -= lr * v (dampening 0, no Nesterov). And its
//! mixed-precision form: gradients of a scaled loss, unscaled in the step,
//! a step skipped where they overflowed, the scale adjusted on the GPU
//! (`LossScale`), so a training loop reads nothing back per step.

use super::{upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, Launch, Params, Recorder, Shader, Tensor};
use crate::kernels::check::{compare, compare_f32, widen, CheckRow, Rng, Tol};
use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

pub fn step_ref(h: &Sgd, p: &mut [f64], g: &[f64], v: &mut [f64]) {
    for i in 0..p.len() {
        let d = g[i] + h.weight_decay as f64 * p[i];
        v[i] = h.momentum as f64 * v[i] + d;
        p[i] -= h.lr as f64 * v[i];
    }
}

const STEP: Kernel = Kernel::new(Shader::Sgd, "step", 64);
const FIND_NON_FINITE: Kernel = Kernel::new(Shader::Sgd, "find_non_finite", 64);
const STEP_SCALED: Kernel = Kernel::new(Shader::Sgd, "step_scaled", 64);
const UPDATE_SCALE: Kernel = Kernel::new(Shader::Sgd, "update_scale", 64);

/// The loss scale a run starts at: 2^10, so an activation gradient as small
/// as 6e-8 is stored above f16's smallest normal (6e-5); a step whose
/// gradients pass f16's largest (65504) is skipped and halves it.
pub const INITIAL_LOSS_SCALE: f32 = 1024.0;
/// Good steps in a row after which the scale doubles; the scale stays
/// within `shaders/sgd.wgsl`'s MIN_SCALE and MAX_SCALE.
pub const GROWTH_INTERVAL: f64 = 100.0;
const MAX_SCALE: f64 = 16777216.0;
const MIN_SCALE: f64 = 1.0 / 65536.0;

/// The dynamic loss scale of mixed-precision training, on the GPU: `state`
/// is [scale, good steps in a row, steps skipped in all, unused] (f32),
/// `found` the current step's overflow flag (u32).
pub struct LossScale {
    pub state: Tensor,
    found: Tensor,
}

impl LossScale {
    pub fn new(gpu: &Gpu, scale: f32) -> Result<LossScale> {
        Ok(LossScale {
            state: Tensor::from_f32(gpu, &[scale, 0.0, 0.0, 0.0], &[4])?,
            found: Tensor::from_u32(gpu, &[0], &[1])?,
        })
    }

    /// The tensor whose element 0 is the scale: the upstream gradient the
    /// loss's backward starts from.
    pub fn scale(&self) -> &Tensor {
        &self.state
    }
}

/// The scaler's [scale, good steps, skipped steps] after a step that did
/// (`overflow`) or did not see a non-finite gradient.
pub fn update_scale_ref(s: [f64; 3], overflow: bool) -> [f64; 3] {
    if overflow {
        return [(s[0] * 0.5).max(MIN_SCALE), 0.0, s[2] + 1.0];
    }
    let good = s[1] + 1.0;
    if good >= GROWTH_INTERVAL {
        [(s[0] * 2.0).min(MAX_SCALE), 0.0, s[2]]
    } else {
        [s[0], good, s[2]]
    }
}

/// `step_ref` of the gradient of a loss scaled by `scale`; none where it
/// holds an inf or NaN.
pub fn scaled_step_ref(h: &Sgd, p: &mut [f64], g: &[f64], v: &mut [f64], scale: f64) {
    if g.iter().all(|x| x.is_finite()) {
        step_ref(h, p, &g.iter().map(|x| x / scale).collect::<Vec<_>>(), v);
    }
}

/// `step` on gradients of the loss scaled by `ls` (all of a step's
/// gradients in one packed `grad`: the overflow test must see them all),
/// then the scale for the next step.
pub fn scaled_step(
    rec: &mut Recorder,
    h: &Sgd,
    param: &Tensor,
    grad: &Tensor,
    velocity: &Tensor,
    ls: &LossScale,
) -> Result<()> {
    same_sizes(param, grad, velocity)?;
    let n = param.numel();
    let p = params(n, h);
    let launch = Launch::threads(n, STEP.wg, 1);
    rec.dispatch(FIND_NON_FINITE, &p, &[(2, Some(grad)), (5, Some(&ls.found))], launch)?;
    let args = [(1, Some(param)), (2, Some(grad)), (3, Some(velocity)), (4, Some(&ls.state)), (6, Some(&ls.found))];
    rec.dispatch(STEP_SCALED, &p, &args, launch)?;
    rec.dispatch(
        UPDATE_SCALE,
        &p,
        &[(4, Some(&ls.state)), (5, Some(&ls.found))],
        Launch::threads(1, UPDATE_SCALE.wg, 1),
    )
}

fn same_sizes(param: &Tensor, grad: &Tensor, velocity: &Tensor) -> Result<()> {
    if param.numel() != grad.numel() || param.numel() != velocity.numel() {
        bail!(
            "sgd: parameter {:?}, gradient {:?} and velocity {:?} differ in size",
            param.shape,
            grad.shape,
            velocity.shape
        );
    }
    Ok(())
}

fn params(n: usize, h: &Sgd) -> Params {
    Params::new()
        .u("n", n)
        .f("lr", h.lr)
        .f("momentum", h.momentum)
        .f("weight_decay", h.weight_decay)
        .f("growth_interval", GROWTH_INTERVAL as f32)
}

/// Updates `param` and `velocity` in place.
pub fn step(rec: &mut Recorder, h: &Sgd, param: &Tensor, grad: &Tensor, velocity: &Tensor) -> Result<()> {
    same_sizes(param, grad, velocity)?;
    let p = params(param.numel(), h);
    rec.dispatch(
        STEP,
        &p,
        &[(1, Some(param)), (2, Some(grad)), (3, Some(velocity))],
        Launch::threads(param.numel(), STEP.wg, 1),
    )
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for n in [1, 63, 65, 1000, rng.range(1, 5000)] {
        let h = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 };
        let ps = rng.uniform(n, -1.0, 1.0);
        let (g1, g2) = (rng.uniform(n, -1.0, 1.0), rng.uniform(n, -1.0, 1.0));
        let (p, v) = (upload(gpu, &ps, &[n])?, Tensor::zeros(gpu, &[n])?);
        let (gt1, gt2) = (upload(gpu, &g1, &[n])?, upload(gpu, &g2, &[n])?);
        let mut rec = Recorder::new(gpu);
        step(&mut rec, &h, &p, &gt1, &v)?;
        step(&mut rec, &h, &p, &gt2, &v)?; // the second step uses the momentum
        rec.submit();
        let (mut pr, mut vr) = (widen(&ps), vec![0.0; n]);
        step_ref(&h, &mut pr, &widen(&g1), &mut vr);
        step_ref(&h, &mut pr, &widen(&g2), &mut vr);
        let shape = format!("n{n} 2 steps");
        rows.push(compare_f32("sgd", "update param", &shape, &p.to_vec(gpu), &pr, Tol::FORWARD));
        rows.push(compare_f32("sgd", "update velocity", &shape, &v.to_vec(gpu), &vr, Tol::FORWARD));
    }
    rows.extend(check_scaled(gpu, rng)?);
    Ok(rows)
}

/// The scaled step over three steps: a finite gradient, one with an inf
/// (skipped, scale halved), a finite one that completes the growth
/// interval (scale doubled).
fn check_scaled(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for n in [1, 65, rng.range(2, 3000)] {
        let h = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 };
        let ps = rng.uniform(n, -1.0, 1.0);
        let scale = 512.0;
        let grads: Vec<Vec<f32>> = (0..3)
            .map(|step| {
                let mut g: Vec<f32> = rng.uniform(n, -1.0, 1.0).iter().map(|v| v * scale).collect();
                if step == 1 {
                    g[rng.index(n)] = f32::INFINITY;
                }
                g
            })
            .collect();
        let (p, v) = (upload(gpu, &ps, &[n])?, Tensor::zeros(gpu, &[n])?);
        let ls = LossScale::new(gpu, scale)?;
        // Two good steps to go before the scale grows.
        ls.state.write(gpu, &[scale, (GROWTH_INTERVAL - 2.0) as f32, 0.0, 0.0])?;
        let mut rec = Recorder::new(gpu);
        let gts = grads.iter().map(|g| upload(gpu, g, &[n])).collect::<Result<Vec<_>>>()?;
        for g in &gts {
            scaled_step(&mut rec, &h, &p, g, &v, &ls)?;
        }
        rec.submit();
        let (mut pr, mut vr) = (widen(&ps), vec![0.0; n]);
        let mut sr = [scale as f64, GROWTH_INTERVAL - 2.0, 0.0];
        for g in &grads {
            let g = widen(g);
            scaled_step_ref(&h, &mut pr, &g, &mut vr, sr[0]);
            sr = update_scale_ref(sr, !g.iter().all(|x| x.is_finite()));
        }
        let shape = format!("n{n} 3 steps, one overflowing");
        rows.push(compare_f32("sgd", "scaled update param", &shape, &p.to_vec(gpu), &pr, Tol::FORWARD));
        rows.push(compare_f32("sgd", "scaled update velocity", &shape, &v.to_vec(gpu), &vr, Tol::FORWARD));
        let got = ls.state.to_vec(gpu);
        rows.push(compare_f32("sgd", "loss scale", &shape, &got[..3], &sr, Tol::FORWARD));
    }
    Ok(rows)
}

/// SGD has no backward to difference; instead the reference is checked
/// against two steps worked out by hand from PyTorch's documented update
/// (p0 = 1, g = 0.5, lr 0.1, momentum 0.9, weight decay 0.01).
fn refcheck(_: &mut Rng) -> Vec<CheckRow> {
    let h = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.01 };
    let (mut p, mut v) = (vec![1.0], vec![0.0]);
    step_ref(&h, &mut p, &[0.5], &mut v);
    let first = [p[0], v[0]];
    step_ref(&h, &mut p, &[0.5], &mut v);
    // step 1: d = 0.5 + 0.01 = 0.51, v = 0.51, p = 1 - 0.051 = 0.949
    // step 2: d = 0.5 + 0.00949 = 0.50949, v = 0.9 * 0.51 + 0.50949 = 0.96849, p = 0.949 - 0.096849
    let got = [first[0], first[1], p[0], v[0]];
    let want = [0.949, 0.51, 0.852151, 0.96849];
    vec![compare("sgd", "ref vs hand-worked steps", "n1 2 steps", &got, &want, Tol { atol: 1e-7, rtol: 1e-6 })]
}

fn bench(gpu: &Gpu, _batch: usize) -> Result<Vec<BenchCase>> {
    // MobileFaceNet's parameter count.
    let n = 1_004_416;
    let (p, g, v) = (Tensor::zeros(gpu, &[n])?, Tensor::zeros(gpu, &[n])?, Tensor::zeros(gpu, &[n])?);
    let h = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 };
    Ok(vec![BenchCase::new("sgd", "update", &format!("n{n}"), 5.0 * n as f64, 20.0 * n as f64, move |rec| {
        step(rec, &h, &p, &g, &v)
    })])
}

pub const FAMILY: Family = Family { name: "sgd", gradcheck, refcheck, bench };
