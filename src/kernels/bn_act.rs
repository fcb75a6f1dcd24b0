//! Batch norm (batch statistics) + PReLU + residual add, fused: one dispatch
//! forward and one backward where the composed ops (`batchnorm`,
//! `activation`, `residual`) take two to five. A training step runs every
//! batch norm of a graph through here (the executor's `BnAct` op, written
//! by the fuse pass).
//!
//! The GPU kernel set cuts each channel's batch into slices instead
//! (`batch_split`): partial statistics per (channel, slice), combined in
//! slice order per channel, then one invocation per element, three
//! dispatches each way, so a GPU gets channels x slices workgroups where
//! the fused kernel gives it one per channel.
//!
//! The reference is the composition of those families' references, so the
//! checks hold the fused kernels to exactly what the composed ops compute.

use super::activation::{prelu_backward_ref, prelu_ref};
use super::batchnorm::{apply_ref, backward_ref as bn_backward_ref, running_update_ref, shapes, stats_ref};
use super::batchnorm::{BatchNorm, BnParams, BnSaved, EPS, MOMENTUM};
use super::{reduction, reduction_launch};
use super::{upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, KernelSet, Launch, Params, Recorder, Shader, Split, Tensor};
use crate::kernels::check::{compare_f32, finite_diff, stored, widen, CheckRow, Rng, Tol};
use anyhow::{bail, Result};

/// The gradients: (dx, dgamma, dbeta, dslope when there is a PReLU). The
/// skip input's gradient is dy itself.
pub type BnActGrads<T> = (T, T, T, Option<T>);

fn params(s: &BatchNorm, slope: bool, skip: bool, train: bool, split: Split) -> Params {
    Params::new()
        .u("n", s.n)
        .u("c", s.c)
        .u("m", s.m)
        .f("momentum", MOMENTUM)
        .f("eps", EPS)
        .u("has_slope", slope as usize)
        .u("has_skip", skip as usize)
        .u("train", train as usize)
        .u("slices", split.slices)
        .u("rows_per_slice", split.per_slice)
}

/// Workgroups the GPU set's statistics aim for (channels x slices).
const GPU_STAT_WORKGROUPS: usize = 512;

/// The GPU set cuts each channel's batch into slices where the channels
/// alone leave the GPU mostly idle; the CPU set keeps one fused dispatch.
fn batch_split(rec: &Recorder, s: &BatchNorm) -> Split {
    match rec.gpu().kernels {
        KernelSet::Cpu => Split::whole(s.n),
        KernelSet::Gpu => Split::slices(s.n, GPU_STAT_WORKGROUPS.div_ceil(s.c)),
    }
}

// ---------------------------------------------------------------- reference

/// y = prelu(bn(x)) + skip with the given statistics (either part optional).
pub fn forward_ref(
    s: &BatchNorm,
    x: &[f64],
    stats: (&[f64], &[f64]),
    gamma: &[f64],
    beta: &[f64],
    slope: Option<&[f64]>,
    skip: Option<&[f64]>,
) -> Vec<f64> {
    let mut y = apply_ref(s, x, stats.0, stats.1, gamma, beta);
    if let Some(a) = slope {
        y = prelu_ref(&y, a, s.c, s.m);
    }
    if let Some(k) = skip {
        y.iter_mut().zip(k).for_each(|(y, k)| *y += k);
    }
    y
}

/// The gradients of `forward_ref` for x, gamma, beta and the slope; `train`:
/// the statistics are the batch's (functions of x).
#[allow(clippy::too_many_arguments)]
pub fn backward_ref(
    s: &BatchNorm,
    x: &[f64],
    stats: (&[f64], &[f64]),
    gamma: &[f64],
    beta: &[f64],
    slope: Option<&[f64]>,
    dy: &[f64],
    train: bool,
) -> BnActGrads<Vec<f64>> {
    let (dz, ds) = match slope {
        Some(a) => {
            let z = apply_ref(s, x, stats.0, stats.1, gamma, beta);
            let (dz, ds) = prelu_backward_ref(&z, a, dy, s.c, s.m);
            (dz, Some(ds))
        }
        None => (dy.to_vec(), None),
    };
    let (dx, dg, db) = bn_backward_ref(s, x, stats.0, stats.1, gamma, &dz, train);
    (dx, dg, db, ds)
}

// ---------------------------------------------------------------------- GPU

const FORWARD: Kernel = Kernel::new(Shader::BnAct, "forward", 256);
const BACKWARD: Kernel = Kernel::new(Shader::BnAct, "backward", 256);
const FORWARD_PARTIAL: Kernel = Kernel::new(Shader::BnAct, "forward_partial", 256);
const FORWARD_COMBINE: Kernel = Kernel::new(Shader::BnAct, "forward_combine", 64);
const FORWARD_APPLY: Kernel = Kernel::new(Shader::BnAct, "forward_apply", 256);
const BACKWARD_PARTIAL: Kernel = Kernel::new(Shader::BnAct, "backward_partial", 256);
const BACKWARD_COMBINE: Kernel = Kernel::new(Shader::BnAct, "backward_combine", 64);
const BACKWARD_APPLY: Kernel = Kernel::new(Shader::BnAct, "backward_apply", 256);
/// The CPU set's kernels where M is a multiple of 4: vec4 loads and stores.
const FORWARD_QUADS: Kernel = Kernel::new(Shader::BnAct, "forward_quads", 256);
const BACKWARD_QUADS: Kernel = Kernel::new(Shader::BnAct, "backward_quads", 256);

fn by_quads(rec: &Recorder, s: &BatchNorm) -> bool {
    rec.gpu().kernels == KernelSet::Cpu && s.m.is_multiple_of(4)
}

fn check_shapes(s: &BatchNorm, x: &Tensor, slope: Option<&Tensor>, skip: Option<&Tensor>) -> Result<()> {
    let bad_slope = slope.is_some_and(|a| a.numel() != s.c);
    let bad_skip = skip.is_some_and(|k| k.numel() != x.numel());
    if x.numel() != s.n * s.c * s.m || bad_slope || bad_skip {
        bail!("bn_act: {} does not fit x {:?} / slope / skip", s.describe(), x.shape);
    }
    Ok(())
}

/// Train mode: batch statistics (saved), the running statistics updated,
/// y = prelu(bn(x)) + skip.
pub fn forward(
    rec: &mut Recorder,
    s: &BatchNorm,
    p: &BnParams,
    x: &Tensor,
    slope: Option<&Tensor>,
    skip: Option<&Tensor>,
) -> Result<(Tensor, BnSaved)> {
    check_shapes(s, x, slope, skip)?;
    let gpu = rec.gpu();
    let y = Tensor::uninit_like(gpu, x, &x.shape)?;
    let (mean, var) = (Tensor::uninit(gpu, &[s.c])?, Tensor::uninit(gpu, &[s.c])?);
    let args = [
        (1, Some(x)),
        (2, Some(&p.gamma)),
        (3, Some(&p.beta)),
        (4, Some(&p.running_mean)),
        (5, Some(&p.running_var)),
        (6, Some(&mean)),
        (7, Some(&var)),
        (8, slope),
        (9, skip),
        (10, Some(&y)),
    ];
    let split = batch_split(rec, s);
    let prm = params(s, slope.is_some(), skip.is_some(), true, split);
    if !split.is_split() && by_quads(rec, s) {
        let k = reduction(rec, FORWARD_QUADS);
        let args = [&args[1..8], &[(19, Some(x)), (20, skip), (21, Some(&y))]].concat();
        rec.dispatch(k, &prm, &args, reduction_launch(k, s.c, s.n * s.m / 4, 3))?;
        return Ok((y, BnSaved { mean, var, train: true }));
    }
    if !split.is_split() {
        let k = reduction(rec, FORWARD);
        rec.dispatch(k, &prm, &args, reduction_launch(k, s.c, s.n * s.m, 3))?;
        return Ok((y, BnSaved { mean, var, train: true }));
    }
    let part = Tensor::uninit(gpu, &[s.c, split.slices, 3])?;
    let k = FORWARD_PARTIAL;
    let args_partial = [(1, Some(x)), (18, Some(&part))];
    rec.dispatch(k, &prm, &args_partial, reduction_launch(k, s.c * split.slices, split.per_slice * s.m, 2))?;
    let args_combine =
        [(4, Some(&p.running_mean)), (5, Some(&p.running_var)), (6, Some(&mean)), (7, Some(&var)), (18, Some(&part))];
    rec.dispatch(FORWARD_COMBINE, &prm, &args_combine, Launch::threads(s.c, FORWARD_COMBINE.wg, split.slices))?;
    let (gamma, beta) = (Some(&p.gamma), Some(&p.beta));
    let args_apply =
        [(1, Some(x)), (2, gamma), (3, beta), (6, Some(&mean)), (7, Some(&var)), (8, slope), (9, skip), (10, Some(&y))];
    rec.dispatch(FORWARD_APPLY, &prm, &args_apply, Launch::threads(s.n * s.c * s.m, FORWARD_APPLY.wg, 1))?;
    Ok((y, BnSaved { mean, var, train: true }))
}

/// The gradients of `forward` (or of the eval-mode composition, with
/// `saved.train` false).
pub fn backward(
    rec: &mut Recorder,
    s: &BatchNorm,
    p: &BnParams,
    x: &Tensor,
    saved: &BnSaved,
    slope: Option<&Tensor>,
    dy: &Tensor,
) -> Result<BnActGrads<Tensor>> {
    check_shapes(s, x, slope, Some(dy))?;
    let gpu = rec.gpu();
    let dx = Tensor::uninit_like(gpu, x, &x.shape)?;
    let (dg, db) = (Tensor::uninit(gpu, &[s.c])?, Tensor::uninit(gpu, &[s.c])?);
    let ds = slope.map(|_| Tensor::uninit(gpu, &[s.c])).transpose()?;
    let args = [
        (1, Some(x)),
        (2, Some(&p.gamma)),
        (3, Some(&p.beta)),
        (8, slope),
        (11, Some(dy)),
        (12, Some(&dx)),
        (13, Some(&dg)),
        (14, Some(&db)),
        (15, ds.as_ref()),
        (16, Some(&saved.mean)),
        (17, Some(&saved.var)),
    ];
    let split = batch_split(rec, s);
    let prm = params(s, slope.is_some(), false, saved.train, split);
    if !split.is_split() && by_quads(rec, s) {
        let k = reduction(rec, BACKWARD_QUADS);
        let args = [&args[1..4], &args[6..], &[(19, Some(x)), (22, Some(dy)), (23, Some(&dx))]].concat();
        rec.dispatch(k, &prm, &args, reduction_launch(k, s.c, s.n * s.m / 4, 2))?;
        return Ok((dx, dg, db, ds));
    }
    if !split.is_split() {
        let k = reduction(rec, BACKWARD);
        rec.dispatch(k, &prm, &args, reduction_launch(k, s.c, s.n * s.m, 2))?;
        return Ok((dx, dg, db, ds));
    }
    let part = Tensor::uninit(gpu, &[s.c, split.slices, 3])?;
    let (mean, var) = (Some(&saved.mean), Some(&saved.var));
    let (gamma, beta) = (Some(&p.gamma), Some(&p.beta));
    let k = BACKWARD_PARTIAL;
    let args_partial =
        [(1, Some(x)), (2, gamma), (3, beta), (8, slope), (11, Some(dy)), (16, mean), (17, var), (18, Some(&part))];
    rec.dispatch(k, &prm, &args_partial, reduction_launch(k, s.c * split.slices, split.per_slice * s.m, 1))?;
    let args_combine = [(13, Some(&dg)), (14, Some(&db)), (15, ds.as_ref()), (18, Some(&part))];
    rec.dispatch(BACKWARD_COMBINE, &prm, &args_combine, Launch::threads(s.c, BACKWARD_COMBINE.wg, split.slices))?;
    let args_apply = [
        (1, Some(x)),
        (2, gamma),
        (3, beta),
        (8, slope),
        (11, Some(dy)),
        (12, Some(&dx)),
        (13, Some(&dg)),
        (14, Some(&db)),
        (16, mean),
        (17, var),
    ];
    rec.dispatch(BACKWARD_APPLY, &prm, &args_apply, Launch::threads(s.n * s.c * s.m, BACKWARD_APPLY.wg, 1))?;
    Ok((dx, dg, db, ds))
}

// ------------------------------------------------------------------- checks

/// Every combination of PReLU and skip at every shape: the fused kernels
/// against the composed references.
fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    let shapes = shapes(rng);
    for s in &shapes {
        for (with_slope, with_skip) in [(true, false), (false, true), (true, true), (false, false)] {
            rows.extend(check_one(gpu, rng, s, with_slope, with_skip, 0.0)?);
        }
    }
    // Activations whose mean is large against their spread (12,544 values
    // a channel, in whole quads): the statistics must not lose the variance
    // to cancellation (E[x^2] - E[x]^2 in f32 is off by about 0.5% here).
    let long = shapes.iter().find(|s| s.m == 3136).expect("a shape of 3136 values an image");
    rows.extend(check_one(gpu, rng, long, true, false, 100.0)?);
    Ok(rows)
}

fn check_one(
    gpu: &Gpu,
    rng: &mut Rng,
    s: &BatchNorm,
    with_slope: bool,
    with_skip: bool,
    offset: f32,
) -> Result<Vec<CheckRow>> {
    let n = s.n * s.c * s.m;
    let xs: Vec<f32> = rng.uniform(n, -2.0, 3.0).iter().map(|v| stored(v + offset)).collect();
    let (gs, bs) = (rng.uniform(s.c, 0.5, 1.5), rng.uniform(s.c, -0.5, 0.5));
    let (rms, rvs) = (rng.uniform(s.c, -0.5, 0.5), rng.uniform(s.c, 0.5, 2.0));
    let (slopes, skips, dys) = (rng.uniform(s.c, 0.05, 0.5), rng.uniform(n, -1.0, 1.0), rng.uniform(n, -1.0, 1.0));
    let shape3 = [s.n, s.c, s.m];
    let x = upload(gpu, &xs, &shape3)?;
    let p = BnParams {
        gamma: upload(gpu, &gs, &[s.c])?,
        beta: upload(gpu, &bs, &[s.c])?,
        running_mean: upload(gpu, &rms, &[s.c])?,
        running_var: upload(gpu, &rvs, &[s.c])?,
    };
    let slope = if with_slope { Some(upload(gpu, &slopes, &[s.c])?) } else { None };
    let skip = if with_skip { Some(upload(gpu, &skips, &shape3)?) } else { None };
    let dy = upload(gpu, &dys, &shape3)?;
    let mut rec = Recorder::new(gpu);
    let (y, saved) = forward(&mut rec, s, &p, &x, slope.as_ref(), skip.as_ref())?;
    let (dx, dg, db, ds) = backward(&mut rec, s, &p, &x, &saved, slope.as_ref(), &dy)?;
    rec.submit();

    let (xr, gr, br) = (widen(&xs), widen(&gs), widen(&bs));
    let (sr, kr) = (widen(&slopes), widen(&skips));
    let (sl, sk) = (with_slope.then_some(&sr[..]), with_skip.then_some(&kr[..]));
    let (mean, var) = stats_ref(s, &xr);
    let (mut rm, mut rv) = (widen(&rms), widen(&rvs));
    running_update_ref(s, &mean, &var, &mut rm, &mut rv);
    let yr = forward_ref(s, &xr, (&mean, &var), &gr, &br, sl, sk);
    let (dxr, dgr, dbr, dsr) = backward_ref(s, &xr, (&mean, &var), &gr, &br, sl, &widen(&dys), true);
    let name = match (with_slope, with_skip) {
        (true, true) => "bn+prelu+add",
        (true, false) => "bn+prelu",
        (false, true) => "bn+add",
        (false, false) => "bn",
    };
    let shape = if offset == 0.0 { s.describe() } else { format!("{}, inputs around {offset}", s.describe()) };
    let mut rows = vec![
        compare_f32(name, "forward", &shape, &y.to_vec(gpu), &yr, Tol::FORWARD),
        compare_f32(name, "running mean", &shape, &p.running_mean.to_vec(gpu), &rm, Tol::FORWARD),
        compare_f32(name, "running var", &shape, &p.running_var.to_vec(gpu), &rv, Tol::FORWARD),
        compare_f32(name, "backward input", &shape, &dx.to_vec(gpu), &dxr, Tol::BACKWARD),
        compare_f32(name, "backward gamma", &shape, &dg.to_vec(gpu), &dgr, Tol::BACKWARD),
        compare_f32(name, "backward beta", &shape, &db.to_vec(gpu), &dbr, Tol::BACKWARD),
    ];
    if let (Some(ds), Some(dsr)) = (ds, dsr) {
        rows.push(compare_f32(name, "backward slope", &shape, &ds.to_vec(gpu), &dsr, Tol::BACKWARD));
    }
    Ok(rows)
}

/// The composed reference's gradients against finite differences, through
/// the batch statistics.
fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for s in shapes(rng).into_iter().take(3) {
        let n = s.n * s.c * s.m;
        let x = widen(&rng.uniform(n, -2.0, 3.0));
        let g = widen(&rng.uniform(s.c, 0.5, 1.5));
        let b = widen(&rng.uniform(s.c, -0.5, 0.5));
        let a = widen(&rng.uniform(s.c, 0.05, 0.5));
        let k = widen(&rng.uniform(n, -1.0, 1.0));
        let dy = widen(&rng.uniform(n, -1.0, 1.0));
        let fwd = |v: &[Vec<f64>]| {
            let (mean, var) = stats_ref(&s, &v[0]);
            forward_ref(&s, &v[0], (&mean, &var), &v[1], &v[2], Some(&v[3]), Some(&k))
        };
        let bwd = |v: &[Vec<f64>], dy: &[f64]| {
            let (mean, var) = stats_ref(&s, &v[0]);
            let (dx, dg, db, ds) = backward_ref(&s, &v[0], (&mean, &var), &v[1], &v[2], Some(&v[3]), dy, true);
            vec![dx, dg, db, ds.expect("a slope")]
        };
        let names = ["x", "gamma", "beta", "slope"];
        rows.extend(finite_diff("bn+prelu+add", &s.describe(), &names, &[x, g, b, a], &dy, &fwd, &bwd, rng));
    }
    rows
}

// -------------------------------------------------------------------- bench

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let s = BatchNorm { n: batch, c: 64, m: 56 * 56 };
    let numel = s.n * s.c * s.m;
    let x = Tensor::zeros(gpu, &[s.n, s.c, s.m])?;
    let ones = vec![1.0f32; s.c];
    let p = std::rc::Rc::new(BnParams {
        gamma: upload(gpu, &ones, &[s.c])?,
        beta: Tensor::zeros(gpu, &[s.c])?,
        running_mean: Tensor::zeros(gpu, &[s.c])?,
        running_var: upload(gpu, &ones, &[s.c])?,
    });
    let slope = upload(gpu, &vec![0.25; s.c], &[s.c])?;
    let (flops, io) = (10.0 * numel as f64, 4.0 * 2.0 * numel as f64);
    let (p2, x2, slope2) = (p.clone(), x.clone(), slope.clone());
    Ok(vec![
        BenchCase::new("bn+prelu", "forward (train)", &s.describe(), flops, io, move |rec| {
            forward(rec, &s, &p, &x, Some(&slope), None).map(drop)
        }),
        BenchCase::new("bn+prelu", "backward (train)", &s.describe(), 2.0 * flops, 1.5 * io, move |rec| {
            let saved = BnSaved { mean: p2.running_mean.clone(), var: p2.running_var.clone(), train: true };
            backward(rec, &s, &p2, &x2, &saved, Some(&slope2), &x2).map(drop)
        }),
    ])
}

pub const FAMILY: Family = Family { name: "bn_act", gradcheck, refcheck, bench };
