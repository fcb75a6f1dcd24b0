//! Batch normalisation per channel over (N, H, W) of an (N, C, H, W) tensor,
//! or over N of an (N, C) one; train mode (batch statistics and the running
//! statistics update, PyTorch conventions) and eval mode (running statistics).

use super::{reduction, reduction_launch, upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, Launch, Params, Recorder, Shader, Tensor};
use crate::kernels::check::{compare_f32, finite_diff, widen, CheckRow, Rng, Tol};
use anyhow::Result;

pub const EPS: f32 = 1e-5;
pub const MOMENTUM: f32 = 0.1;

/// Layout (n, c, m): m = H*W for images, 1 for 2-D input.
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm {
    pub n: usize,
    pub c: usize,
    pub m: usize,
}

impl BatchNorm {
    pub fn describe(&self) -> String {
        format!("n{} c{} hw{}", self.n, self.c, self.m)
    }
    fn params(&self, update_running: bool, train: bool) -> Params {
        Params::new()
            .u("n", self.n)
            .u("c", self.c)
            .u("m", self.m)
            .f("momentum", MOMENTUM)
            .f("eps", EPS)
            .u("update_running", update_running as usize)
            .u("train", train as usize)
    }
    fn numel(&self) -> usize {
        self.n * self.c * self.m
    }
}

// ---------------------------------------------------------------- reference

/// Per-channel mean and biased variance.
pub fn stats_ref(s: &BatchNorm, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let count = (s.n * s.m) as f64;
    let vals = |c: usize| (0..s.n).flat_map(move |n| (0..s.m).map(move |j| (n * s.c + c) * s.m + j));
    let mean: Vec<f64> = (0..s.c).map(|c| vals(c).map(|i| x[i]).sum::<f64>() / count).collect();
    let var = (0..s.c).map(|c| vals(c).map(|i| (x[i] - mean[c]).powi(2)).sum::<f64>() / count).collect();
    (mean, var)
}

/// PyTorch's update: momentum-weighted, with the unbiased batch variance.
pub fn running_update_ref(s: &BatchNorm, mean: &[f64], var: &[f64], rm: &mut [f64], rv: &mut [f64]) {
    let count = (s.n * s.m) as f64;
    let m = MOMENTUM as f64;
    for c in 0..s.c {
        let unbiased = if count > 1.0 { var[c] * count / (count - 1.0) } else { var[c] };
        rm[c] = (1.0 - m) * rm[c] + m * mean[c];
        rv[c] = (1.0 - m) * rv[c] + m * unbiased;
    }
}

/// y = (x - mean) / sqrt(var + eps) * gamma + beta, with the given statistics.
pub fn apply_ref(s: &BatchNorm, x: &[f64], mean: &[f64], var: &[f64], gamma: &[f64], beta: &[f64]) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let c = (i / s.m) % s.c;
            (x[i] - mean[c]) / (var[c] + EPS as f64).sqrt() * gamma[c] + beta[c]
        })
        .collect()
}

/// Train-mode forward: statistics of this batch.
pub fn forward_train_ref(s: &BatchNorm, x: &[f64], gamma: &[f64], beta: &[f64]) -> Vec<f64> {
    let (mean, var) = stats_ref(s, x);
    apply_ref(s, x, &mean, &var, gamma, beta)
}

/// (dx, dgamma, dbeta). `train`: the statistics depend on x (batch
/// statistics); otherwise they are constants (eval mode, frozen BN).
pub fn backward_ref(
    s: &BatchNorm,
    x: &[f64],
    mean: &[f64],
    var: &[f64],
    gamma: &[f64],
    dy: &[f64],
    train: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dg, mut db) = (vec![0.0; s.c], vec![0.0; s.c]);
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + EPS as f64).sqrt()).collect();
    let xhat = |i: usize| (x[i] - mean[(i / s.m) % s.c]) * inv[(i / s.m) % s.c];
    for i in 0..x.len() {
        let c = (i / s.m) % s.c;
        dg[c] += dy[i] * xhat(i);
        db[c] += dy[i];
    }
    let count = (s.n * s.m) as f64;
    let dx = (0..x.len())
        .map(|i| {
            let c = (i / s.m) % s.c;
            let g = if train { dy[i] - (db[c] + xhat(i) * dg[c]) / count } else { dy[i] };
            gamma[c] * inv[c] * g
        })
        .collect();
    (dx, dg, db)
}

// ---------------------------------------------------------------------- GPU

const STATS: Kernel = Kernel::new(Shader::BatchNorm, "stats", 256);
const APPLY: Kernel = Kernel::new(Shader::BatchNorm, "apply", 64);
const BACKWARD_PARAMS: Kernel = Kernel::new(Shader::BatchNorm, "backward_params", 256);
const BACKWARD_INPUT: Kernel = Kernel::new(Shader::BatchNorm, "backward_input", 64);

/// Learned parameters and running statistics of one layer.
#[derive(Clone)]
pub struct BnParams<T = Tensor> {
    pub gamma: T,
    pub beta: T,
    pub running_mean: T,
    pub running_var: T,
}

/// What the backward pass needs from the forward pass.
#[derive(Clone)]
pub struct BnSaved<T = Tensor> {
    pub mean: T,
    pub var: T,
    pub train: bool,
}

/// Train mode normalises with batch statistics and updates the running ones;
/// eval mode normalises with the running statistics.
pub fn forward(rec: &mut Recorder, s: &BatchNorm, p: &BnParams, x: &Tensor, train: bool) -> Result<(Tensor, BnSaved)> {
    let gpu = rec.gpu();
    let y = Tensor::uninit_like(gpu, x, &x.shape)?;
    let saved = if train {
        let (mean, var) = (Tensor::uninit(gpu, &[s.c])?, Tensor::uninit(gpu, &[s.c])?);
        let args =
            [(1, Some(x)), (2, Some(&mean)), (3, Some(&var)), (4, Some(&p.running_mean)), (5, Some(&p.running_var))];
        let k = reduction(rec, STATS);
        rec.dispatch(k, &s.params(true, true), &args, reduction_launch(k, s.c, s.n * s.m, 2))?;
        BnSaved { mean, var, train }
    } else {
        BnSaved { mean: p.running_mean.clone(), var: p.running_var.clone(), train }
    };
    let args = [
        (1, Some(x)),
        (13, Some(&saved.mean)),
        (14, Some(&saved.var)),
        (6, Some(&p.gamma)),
        (7, Some(&p.beta)),
        (8, Some(&y)),
    ];
    rec.dispatch(APPLY, &s.params(false, train), &args, Launch::threads(s.numel(), APPLY.wg, 1))?;
    Ok((y, saved))
}

/// (dx, dgamma, dbeta)
pub fn backward(
    rec: &mut Recorder,
    s: &BatchNorm,
    p: &BnParams,
    x: &Tensor,
    saved: &BnSaved,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let gpu = rec.gpu();
    let (dx, dg, db) =
        (Tensor::uninit_like(gpu, x, &x.shape)?, Tensor::uninit(gpu, &[s.c])?, Tensor::uninit(gpu, &[s.c])?);
    let prm = s.params(false, saved.train);
    let stats = [(13, Some(&saved.mean)), (14, Some(&saved.var))];
    let args = [(1, Some(x)), (9, Some(dy)), (10, Some(&dg)), (11, Some(&db)), stats[0], stats[1]];
    let k = reduction(rec, BACKWARD_PARAMS);
    rec.dispatch(k, &prm, &args, reduction_launch(k, s.c, s.n * s.m, 1))?;
    let args = [
        (1, Some(x)),
        (6, Some(&p.gamma)),
        (9, Some(dy)),
        (10, Some(&dg)),
        (11, Some(&db)),
        (12, Some(&dx)),
        stats[0],
        stats[1],
    ];
    rec.dispatch(BACKWARD_INPUT, &prm, &args, Launch::threads(s.numel(), BACKWARD_INPUT.wg, 1))?;
    Ok((dx, dg, db))
}

// ------------------------------------------------------------------- checks

/// The checked shapes (also the fused `bn_act`'s).
pub(crate) fn shapes(rng: &mut Rng) -> Vec<BatchNorm> {
    vec![
        BatchNorm { n: 2, c: 3, m: 7 * 5 },
        BatchNorm { n: 5, c: 7, m: 1 },       // 2-D input
        BatchNorm { n: 3, c: 2, m: 17 * 19 }, // more values per channel than threads
        BatchNorm { n: 1, c: 11, m: 13 },
        BatchNorm { n: 4, c: 3, m: 3136 },
        BatchNorm { n: 4, c: 3, m: 49 },
        BatchNorm { n: 3, c: 5, m: 4 * 9 }, // whole quads, fewer than the lanes
        BatchNorm { n: rng.range(2, 4), c: rng.range(1, 9), m: rng.range(1, 300) },
    ]
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for s in shapes(rng) {
        for train in [true, false] {
            let xs = rng.uniform(s.numel(), -2.0, 3.0);
            let (gs, bs) = (rng.uniform(s.c, 0.5, 1.5), rng.uniform(s.c, -0.5, 0.5));
            let (rms, rvs) = (rng.uniform(s.c, -0.5, 0.5), rng.uniform(s.c, 0.5, 2.0));
            let dys = rng.uniform(s.numel(), -1.0, 1.0);
            let x = upload(gpu, &xs, &[s.n, s.c, s.m])?;
            let p = BnParams {
                gamma: upload(gpu, &gs, &[s.c])?,
                beta: upload(gpu, &bs, &[s.c])?,
                running_mean: upload(gpu, &rms, &[s.c])?,
                running_var: upload(gpu, &rvs, &[s.c])?,
            };
            let dy = upload(gpu, &dys, &[s.n, s.c, s.m])?;
            let mut rec = Recorder::new(gpu);
            let (y, saved) = forward(&mut rec, &s, &p, &x, train)?;
            let (dx, dg, db) = backward(&mut rec, &s, &p, &x, &saved, &dy)?;
            rec.submit();

            let (xr, gr, br) = (widen(&xs), widen(&gs), widen(&bs));
            let (mut rm, mut rv) = (widen(&rms), widen(&rvs));
            let (mean, var) = if train { stats_ref(&s, &xr) } else { (rm.clone(), rv.clone()) };
            let yr = apply_ref(&s, &xr, &mean, &var, &gr, &br);
            let (dxr, dgr, dbr) = backward_ref(&s, &xr, &mean, &var, &gr, &widen(&dys), train);
            let shape = format!("{} {}", s.describe(), if train { "train" } else { "eval" });
            rows.push(compare_f32("batchnorm", "forward", &shape, &y.to_vec(gpu), &yr, Tol::FORWARD));
            if train {
                running_update_ref(&s, &mean, &var, &mut rm, &mut rv);
                rows.push(compare_f32(
                    "batchnorm",
                    "running mean",
                    &shape,
                    &p.running_mean.to_vec(gpu),
                    &rm,
                    Tol::FORWARD,
                ));
                rows.push(compare_f32(
                    "batchnorm",
                    "running var",
                    &shape,
                    &p.running_var.to_vec(gpu),
                    &rv,
                    Tol::FORWARD,
                ));
            }
            rows.push(compare_f32("batchnorm", "backward input", &shape, &dx.to_vec(gpu), &dxr, Tol::BACKWARD));
            rows.push(compare_f32("batchnorm", "backward gamma", &shape, &dg.to_vec(gpu), &dgr, Tol::BACKWARD));
            rows.push(compare_f32("batchnorm", "backward beta", &shape, &db.to_vec(gpu), &dbr, Tol::BACKWARD));
        }
    }
    Ok(rows)
}

fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for s in shapes(rng).into_iter().take(3) {
        let x = widen(&rng.uniform(s.numel(), -2.0, 3.0));
        let g = widen(&rng.uniform(s.c, 0.5, 1.5));
        let b = widen(&rng.uniform(s.c, -0.5, 0.5));
        let dy = widen(&rng.uniform(s.numel(), -1.0, 1.0));
        // Train mode: the statistics are functions of x.
        let fwd = |v: &[Vec<f64>]| forward_train_ref(&s, &v[0], &v[1], &v[2]);
        let bwd = |v: &[Vec<f64>], dy: &[f64]| {
            let (mean, var) = stats_ref(&s, &v[0]);
            let (dx, dg, db) = backward_ref(&s, &v[0], &mean, &var, &v[1], dy, true);
            vec![dx, dg, db]
        };
        let shape = format!("{} train", s.describe());
        rows.extend(finite_diff(
            "batchnorm",
            &shape,
            &["x", "gamma", "beta"],
            &[x.clone(), g.clone(), b.clone()],
            &dy,
            &fwd,
            &bwd,
            rng,
        ));
        // Eval mode: fixed statistics.
        let (mean, var) = (widen(&rng.uniform(s.c, -0.5, 0.5)), widen(&rng.uniform(s.c, 0.5, 2.0)));
        let fwd = |v: &[Vec<f64>]| apply_ref(&s, &v[0], &mean, &var, &v[1], &v[2]);
        let bwd = |v: &[Vec<f64>], dy: &[f64]| {
            let (dx, dg, db) = backward_ref(&s, &v[0], &mean, &var, &v[1], dy, false);
            vec![dx, dg, db]
        };
        let shape = format!("{} eval", s.describe());
        rows.extend(finite_diff("batchnorm", &shape, &["x", "gamma", "beta"], &[x, g, b], &dy, &fwd, &bwd, rng));
    }
    rows
}

// -------------------------------------------------------------------- bench

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let s = BatchNorm { n: batch, c: 64, m: 56 * 56 };
    let x = Tensor::zeros(gpu, &[s.n, s.c, s.m])?;
    let dy = Tensor::zeros(gpu, &[s.n, s.c, s.m])?;
    let ones = vec![1.0f32; s.c];
    let p = std::rc::Rc::new(BnParams {
        gamma: upload(gpu, &ones, &[s.c])?,
        beta: Tensor::zeros(gpu, &[s.c])?,
        running_mean: Tensor::zeros(gpu, &[s.c])?,
        running_var: upload(gpu, &ones, &[s.c])?,
    });
    let (flops, io) = (8.0 * s.numel() as f64, 4.0 * 2.0 * s.numel() as f64);
    let (p2, x2) = (p.clone(), x.clone());
    Ok(vec![
        BenchCase::new("batchnorm", "forward (train)", &s.describe(), flops, io, move |rec| {
            forward(rec, &s, &p, &x, true).map(drop)
        }),
        BenchCase::new("batchnorm", "backward (train)", &s.describe(), 2.0 * flops, 1.5 * io, move |rec| {
            let saved = BnSaved { mean: p2.running_mean.clone(), var: p2.running_var.clone(), train: true };
            backward(rec, &s, &p2, &x2, &saved, &dy).map(drop)
        }),
    ])
}

pub const FAMILY: Family = Family { name: "batchnorm", gradcheck, refcheck, bench };
