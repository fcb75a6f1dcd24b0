//! SGD with momentum and weight decay, PyTorch semantics, on the GPU:
//! v = mu * v + g + wd * p; p -= lr * v (dampening 0, no Nesterov).

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

/// Updates `param` and `velocity` in place.
pub fn step(rec: &mut Recorder, h: &Sgd, param: &Tensor, grad: &Tensor, velocity: &Tensor) -> Result<()> {
    if param.numel() != grad.numel() || param.numel() != velocity.numel() {
        bail!(
            "sgd: parameter {:?}, gradient {:?} and velocity {:?} differ in size",
            param.shape,
            grad.shape,
            velocity.shape
        );
    }
    let p =
        Params::new().u("n", param.numel()).f("lr", h.lr).f("momentum", h.momentum).f("weight_decay", h.weight_decay);
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
