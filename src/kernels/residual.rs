//! The residual connection: out = a + b forward; backward, both inputs get
//! dy, and where one tensor feeds two consumers its gradients are summed
//! (`accumulate`). Flatten and reshape are views (`Tensor::reshape`), no kernel.

use super::{upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, Launch, Params, Recorder, Shader, Tensor};
use crate::kernels::check::{compare_f32, finite_diff, widen, CheckRow, Rng, Tol};
use anyhow::{bail, Result};

const ADD: Kernel = Kernel::new(Shader::Residual, "add", 64);
const ACCUMULATE: Kernel = Kernel::new(Shader::Residual, "accumulate", 64);

pub fn add_ref(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Gradients of a + b: dy for each input.
pub fn add_backward_ref(dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    (dy.to_vec(), dy.to_vec())
}

pub fn add(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape != b.shape {
        bail!("residual add: shapes {:?} and {:?} differ", a.shape, b.shape);
    }
    let out = Tensor::uninit_like(rec.gpu(), a, &a.shape)?;
    let args = [(1, Some(a)), (2, Some(b)), (3, Some(&out))];
    rec.dispatch(ADD, &Params::new().u("n", a.numel()), &args, Launch::threads(a.numel(), ADD.wg, 1))?;
    Ok(out)
}

/// acc += g: the gradient fan-out where a tensor has two consumers.
pub fn accumulate(rec: &mut Recorder, acc: &Tensor, g: &Tensor) -> Result<()> {
    if acc.numel() != g.numel() {
        bail!("gradient accumulate: shapes {:?} and {:?} differ", acc.shape, g.shape);
    }
    let args = [(1, Some(g)), (4, Some(acc))];
    rec.dispatch(ACCUMULATE, &Params::new().u("n", g.numel()), &args, Launch::threads(g.numel(), ACCUMULATE.wg, 1))
}

fn sizes(rng: &mut Rng) -> Vec<usize> {
    vec![1, 63, 64, 65, 1031, rng.range(1, 5000)]
}

/// Forward checks the add; backward checks the fan-out: x feeds both the
/// identity path and a branch, so dx = dy (identity) + dy (branch).
fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for n in sizes(rng) {
        let (av, bv, dyv) = (rng.uniform(n, -1.0, 1.0), rng.uniform(n, -1.0, 1.0), rng.uniform(n, -1.0, 1.0));
        let a = upload(gpu, &av, &[n])?;
        let b = upload(gpu, &bv, &[n])?;
        let dy = upload(gpu, &dyv, &[n])?;
        let mut rec = Recorder::new(gpu);
        let y = add(&mut rec, &a, &b)?;
        let dx = Tensor::zeros_as(gpu, &[n], dy.dtype)?;
        rec.copy(&dy, &dx)?;
        accumulate(&mut rec, &dx, &dy)?;
        rec.submit();
        let (ar, br, dyr) = (widen(&av), widen(&bv), widen(&dyv));
        let (da, db) = add_backward_ref(&dyr);
        let shape = format!("n{n}");
        rows.push(compare_f32("residual", "forward", &shape, &y.to_vec(gpu), &add_ref(&ar, &br), Tol::FORWARD));
        rows.push(compare_f32(
            "residual",
            "backward fan-out",
            &shape,
            &dx.to_vec(gpu),
            &add_ref(&da, &db),
            Tol::BACKWARD,
        ));
    }
    Ok(rows)
}

fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for n in sizes(rng).into_iter().take(4) {
        let (a, b, dy) =
            (widen(&rng.uniform(n, -1.0, 1.0)), widen(&rng.uniform(n, -1.0, 1.0)), widen(&rng.uniform(n, -1.0, 1.0)));
        let fwd = |v: &[Vec<f64>]| add_ref(&v[0], &v[1]);
        let bwd = |_: &[Vec<f64>], dy: &[f64]| {
            let (a, b) = add_backward_ref(dy);
            vec![a, b]
        };
        rows.extend(finite_diff("residual", &format!("n{n}"), &["a", "b"], &[a, b], &dy, &fwd, &bwd, rng));
    }
    rows
}

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let shape = [batch, 64, 28, 28];
    let (a, b) = (Tensor::zeros(gpu, &shape)?, Tensor::zeros(gpu, &shape)?);
    let n = a.numel() as f64;
    let (a2, b2) = (a.clone(), b.clone());
    let desc = format!("n{batch} c64 28x28");
    Ok(vec![
        BenchCase::new("residual add", "forward", &desc, n, 12.0 * n, move |rec| add(rec, &a, &b).map(drop)),
        BenchCase::new("residual add", "backward", &desc, n, 12.0 * n, move |rec| accumulate(rec, &a2, &b2)),
    ])
}

pub const FAMILY: Family = Family { name: "residual", gradcheck, refcheck, bench };
