//! Activations: PReLU (one slope per channel; gradients for input and slope),
//! ReLU and ReLU6. `shaders/activation.wgsl`.

use super::{reduction, reduction_launch, upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, Launch, Params, Recorder, Shader, Tensor};
use crate::kernels::check::{compare_f32, finite_diff, widen, CheckRow, Rng, Tol};
use anyhow::Result;

/// The parameter-free activations (also how imported graphs name them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    Relu,
    Relu6,
}

// ---------------------------------------------------------------- reference

pub fn act_ref(act: Act, x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| if act == Act::Relu { v.max(0.0) } else { v.clamp(0.0, 6.0) }).collect()
}

/// PyTorch's gradients: ReLU passes where x > 0, ReLU6 where 0 < x < 6.
pub fn act_backward_ref(act: Act, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let hi = if act == Act::Relu { f64::INFINITY } else { 6.0 };
    x.iter().zip(dy).map(|(&v, &d)| if v > 0.0 && v < hi { d } else { 0.0 }).collect()
}

/// x viewed as (n, c, m).
pub fn prelu_ref(x: &[f64], slope: &[f64], c: usize, m: usize) -> Vec<f64> {
    x.iter().enumerate().map(|(i, &v)| if v > 0.0 { v } else { slope[(i / m) % c] * v }).collect()
}

/// (dx, dslope)
pub fn prelu_backward_ref(x: &[f64], slope: &[f64], dy: &[f64], c: usize, m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut ds = vec![0.0; c];
    let dx = (0..x.len())
        .map(|i| {
            let ch = (i / m) % c;
            if x[i] > 0.0 {
                dy[i]
            } else {
                ds[ch] += dy[i] * x[i];
                slope[ch] * dy[i]
            }
        })
        .collect();
    (dx, ds)
}

// ---------------------------------------------------------------------- GPU

const RELU_FORWARD: Kernel = Kernel::new(Shader::Activation, "relu_forward", 64);
const RELU_BACKWARD: Kernel = Kernel::new(Shader::Activation, "relu_backward", 64);
const RELU6_FORWARD: Kernel = Kernel::new(Shader::Activation, "relu6_forward", 64);
const RELU6_BACKWARD: Kernel = Kernel::new(Shader::Activation, "relu6_backward", 64);
const PRELU_FORWARD: Kernel = Kernel::new(Shader::Activation, "prelu_forward", 64);
const PRELU_BACKWARD_INPUT: Kernel = Kernel::new(Shader::Activation, "prelu_backward_input", 64);
const PRELU_BACKWARD_SLOPE: Kernel = Kernel::new(Shader::Activation, "prelu_backward_slope", 256);

pub fn forward(rec: &mut Recorder, act: Act, x: &Tensor) -> Result<Tensor> {
    let y = Tensor::uninit_like(rec.gpu(), x, &x.shape)?;
    let k = if act == Act::Relu { RELU_FORWARD } else { RELU6_FORWARD };
    rec.dispatch(k, &elementwise(x), &[(1, Some(x)), (3, Some(&y))], Launch::threads(x.numel(), k.wg, 1))?;
    Ok(y)
}

pub fn backward(rec: &mut Recorder, act: Act, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let dx = Tensor::uninit_like(rec.gpu(), x, &x.shape)?;
    let k = if act == Act::Relu { RELU_BACKWARD } else { RELU6_BACKWARD };
    let args = [(1, Some(x)), (4, Some(dy)), (5, Some(&dx))];
    rec.dispatch(k, &elementwise(x), &args, Launch::threads(x.numel(), k.wg, 1))?;
    Ok(dx)
}

/// ReLU and ReLU6 see every element alike: one "channel" of all of them.
fn elementwise(x: &Tensor) -> Params {
    Params::new().u("n", x.numel()).u("c", 1).u("m", 1)
}

/// PReLU's view of an NC[HW] tensor: batch, channels and per-channel size (H*W, or 1).
fn channels(x: &Tensor) -> Params {
    let (n, c, m) = (x.shape[0], x.shape[1], x.shape[2..].iter().product());
    Params::new().u("n", n).u("c", c).u("m", m)
}

pub fn prelu_forward(rec: &mut Recorder, x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let y = Tensor::uninit_like(rec.gpu(), x, &x.shape)?;
    let args = [(1, Some(x)), (2, Some(slope)), (3, Some(&y))];
    rec.dispatch(PRELU_FORWARD, &channels(x), &args, Launch::threads(x.numel(), PRELU_FORWARD.wg, 1))?;
    Ok(y)
}

/// (dx, dslope)
pub fn prelu_backward(rec: &mut Recorder, x: &Tensor, slope: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    let c = x.shape[1];
    let p = channels(x);
    let dx = Tensor::uninit_like(rec.gpu(), x, &x.shape)?;
    let ds = Tensor::uninit(rec.gpu(), &[c])?;
    let slope_k = reduction(rec, PRELU_BACKWARD_SLOPE);
    let per_channel = reduction_launch(slope_k, c, x.numel() / c, 1);
    let args = [(1, Some(x)), (2, Some(slope)), (4, Some(dy)), (5, Some(&dx))];
    rec.dispatch(PRELU_BACKWARD_INPUT, &p, &args, Launch::threads(x.numel(), PRELU_BACKWARD_INPUT.wg, 1))?;
    rec.dispatch(slope_k, &p, &[(1, Some(x)), (4, Some(dy)), (6, Some(&ds))], per_channel)?;
    Ok((dx, ds))
}

// ------------------------------------------------------------------- checks

/// (n, c, m) shapes; thread counts around and across workgroup boundaries.
fn shapes(rng: &mut Rng) -> Vec<[usize; 3]> {
    vec![
        [1, 1, 1],
        [2, 3, 7 * 7],
        [3, 5, 67],
        [4, 64, 1],
        [2, 2, 600],
        [rng.range(1, 4), rng.range(1, 9), rng.range(1, 200)],
    ]
}

/// Inputs kept away from the kinks (0, and 6 for ReLU6) so that the finite
/// differences do not straddle them; GPU checks include exact zeros too.
fn inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.away_from(n, -8.0, 8.0, &[0.0, 6.0], 1e-3)
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for [n, c, m] in shapes(rng) {
        let mut xs = rng.uniform(n * c * m, -8.0, 8.0);
        xs[0] = 0.0; // the kink itself: gradient conventions must match PyTorch's
        let slopes = rng.uniform(c, 0.0, 0.5);
        let dys = rng.uniform(xs.len(), -1.0, 1.0);
        let x = upload(gpu, &xs, &[n, c, m])?;
        let a = upload(gpu, &slopes, &[c])?;
        let dy = upload(gpu, &dys, &[n, c, m])?;
        let mut rec = Recorder::new(gpu);
        let outs = [
            forward(&mut rec, Act::Relu, &x)?,
            backward(&mut rec, Act::Relu, &x, &dy)?,
            forward(&mut rec, Act::Relu6, &x)?,
            backward(&mut rec, Act::Relu6, &x, &dy)?,
            prelu_forward(&mut rec, &x, &a)?,
        ];
        let (pdx, pds) = prelu_backward(&mut rec, &x, &a, &dy)?;
        rec.submit();
        let (xr, ar, dyr) = (widen(&xs), widen(&slopes), widen(&dys));
        let (pdxr, pdsr) = prelu_backward_ref(&xr, &ar, &dyr, c, m);
        let want = [
            ("relu", "forward", act_ref(Act::Relu, &xr), Tol::FORWARD),
            ("relu", "backward input", act_backward_ref(Act::Relu, &xr, &dyr), Tol::BACKWARD),
            ("relu6", "forward", act_ref(Act::Relu6, &xr), Tol::FORWARD),
            ("relu6", "backward input", act_backward_ref(Act::Relu6, &xr, &dyr), Tol::BACKWARD),
            ("prelu", "forward", prelu_ref(&xr, &ar, c, m), Tol::FORWARD),
        ];
        let shape = format!("n{n} c{c} hw{m}");
        for (t, (k, dir, r, tol)) in outs.iter().zip(want) {
            rows.push(compare_f32(k, dir, &shape, &t.to_vec(gpu), &r, tol));
        }
        rows.push(compare_f32("prelu", "backward input", &shape, &pdx.to_vec(gpu), &pdxr, Tol::BACKWARD));
        rows.push(compare_f32("prelu", "backward slope", &shape, &pds.to_vec(gpu), &pdsr, Tol::BACKWARD));
    }
    Ok(rows)
}

fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for [n, c, m] in shapes(rng) {
        let x = widen(&inputs(rng, n * c * m));
        let a = widen(&rng.uniform(c, 0.0, 0.5));
        let dy = widen(&rng.uniform(x.len(), -1.0, 1.0));
        let shape = format!("n{n} c{c} hw{m}");
        for act in [Act::Relu, Act::Relu6] {
            let name = if act == Act::Relu { "relu" } else { "relu6" };
            let fwd = |v: &[Vec<f64>]| act_ref(act, &v[0]);
            let bwd = |v: &[Vec<f64>], dy: &[f64]| vec![act_backward_ref(act, &v[0], dy)];
            rows.extend(finite_diff(name, &shape, &["x"], &[x.clone()], &dy, &fwd, &bwd, rng));
        }
        let fwd = |v: &[Vec<f64>]| prelu_ref(&v[0], &v[1], c, m);
        let bwd = |v: &[Vec<f64>], dy: &[f64]| {
            let (dx, ds) = prelu_backward_ref(&v[0], &v[1], dy, c, m);
            vec![dx, ds]
        };
        rows.extend(finite_diff("prelu", &shape, &["x", "slope"], &[x, a], &dy, &fwd, &bwd, rng));
    }
    rows
}

// -------------------------------------------------------------------- bench

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let shape = [batch, 64, 56 * 56];
    let x = Tensor::zeros(gpu, &shape)?;
    let dy = Tensor::zeros(gpu, &shape)?;
    let a = Tensor::zeros(gpu, &[64])?;
    let n = x.numel() as f64;
    let desc = format!("n{batch} c64 56x56");
    let (x2, x3, x4) = (x.clone(), x.clone(), x.clone());
    let (a2, dy2) = (a.clone(), dy.clone());
    Ok(vec![
        BenchCase::new("prelu", "forward", &desc, n, 8.0 * n, move |rec| prelu_forward(rec, &x, &a).map(drop)),
        BenchCase::new("prelu", "backward", &desc, 3.0 * n, 16.0 * n, move |rec| {
            prelu_backward(rec, &x2, &a2, &dy).map(drop)
        }),
        BenchCase::new("relu6", "forward", &desc, n, 8.0 * n, move |rec| forward(rec, Act::Relu6, &x3).map(drop)),
        BenchCase::new("relu6", "backward", &desc, n, 12.0 * n, move |rec| {
            backward(rec, Act::Relu6, &x4, &dy2).map(drop)
        }),
    ])
}

pub const FAMILY: Family = Family { name: "activation", gradcheck, refcheck, bench };
