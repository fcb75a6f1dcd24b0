//! Row-wise L2 normalisation (torch.nn.functional.normalize, eps 1e-12):
//! embeddings and ArcFace class weights.

use super::{reduction, reduction_launch, upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, Params, Recorder, Shader, Tensor};
use crate::kernels::check::{compare_f32, finite_diff, widen, CheckRow, Rng, Tol};
use anyhow::Result;

pub const EPS: f32 = 1e-12;

pub fn forward_ref(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(EPS as f64);
            row.iter().map(move |v| v / norm)
        })
        .collect()
}

pub fn backward_ref(x: &[f64], dy: &[f64], d: usize) -> Vec<f64> {
    x.chunks(d)
        .zip(dy.chunks(d))
        .flat_map(|(row, g)| {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            let (n, dot) = if norm > EPS as f64 {
                (norm, row.iter().zip(g).map(|(x, g)| x * g).sum::<f64>() / norm)
            } else {
                (EPS as f64, 0.0)
            };
            row.iter().zip(g).map(move |(x, g)| (g - x / n * dot) / n).collect::<Vec<_>>()
        })
        .collect()
}

const FORWARD: Kernel = Kernel::new(Shader::L2Norm, "forward", 256);
const BACKWARD: Kernel = Kernel::new(Shader::L2Norm, "backward", 256);

/// What the backward pass needs: the output rows and their norms.
pub struct L2Saved {
    pub y: Tensor,
    pub norms: Tensor,
}

/// x: (rows, d)
pub fn forward(rec: &mut Recorder, x: &Tensor) -> Result<L2Saved> {
    let (rows, d) = (x.shape[0], x.numel() / x.shape[0]);
    let y = Tensor::uninit(rec.gpu(), &x.shape)?;
    let norms = Tensor::uninit(rec.gpu(), &[rows])?;
    let p = Params::new().u("rows", rows).u("d", d).f("eps", EPS);
    let k = reduction(rec, FORWARD);
    rec.dispatch(k, &p, &[(1, Some(x)), (2, Some(&y)), (3, Some(&norms))], reduction_launch(k, rows, d, 2))?;
    Ok(L2Saved { y, norms })
}

pub fn backward(rec: &mut Recorder, saved: &L2Saved, dy: &Tensor) -> Result<Tensor> {
    let (rows, d) = (dy.shape[0], dy.numel() / dy.shape[0]);
    let dx = Tensor::uninit(rec.gpu(), &dy.shape)?;
    let p = Params::new().u("rows", rows).u("d", d).f("eps", EPS);
    let args = [(4, Some(dy)), (5, Some(&dx)), (6, Some(&saved.y)), (7, Some(&saved.norms))];
    let k = reduction(rec, BACKWARD);
    rec.dispatch(k, &p, &args, reduction_launch(k, rows, d, 2))?;
    Ok(dx)
}

fn shapes(rng: &mut Rng) -> Vec<(usize, usize)> {
    vec![(1, 1), (4, 128), (3, 7), (10, 300), (5, 513), (rng.range(1, 40), rng.range(1, 200))]
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for (r, d) in shapes(rng) {
        let xs = rng.uniform(r * d, -1.0, 1.0);
        let dys = rng.uniform(r * d, -1.0, 1.0);
        let x = upload(gpu, &xs, &[r, d])?;
        let dy = upload(gpu, &dys, &[r, d])?;
        let mut rec = Recorder::new(gpu);
        let saved = forward(&mut rec, &x)?;
        let dx = backward(&mut rec, &saved, &dy)?;
        rec.submit();
        let xr = widen(&xs);
        let shape = format!("{r}x{d}");
        rows.push(compare_f32("l2norm", "forward", &shape, &saved.y.to_vec(gpu), &forward_ref(&xr, d), Tol::FORWARD));
        rows.push(compare_f32(
            "l2norm",
            "backward input",
            &shape,
            &dx.to_vec(gpu),
            &backward_ref(&xr, &widen(&dys), d),
            Tol::BACKWARD,
        ));
    }
    Ok(rows)
}

fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for (r, d) in shapes(rng) {
        let x = widen(&rng.uniform(r * d, -1.0, 1.0));
        let dy = widen(&rng.uniform(r * d, -1.0, 1.0));
        let fwd = |v: &[Vec<f64>]| forward_ref(&v[0], d);
        let bwd = |v: &[Vec<f64>], dy: &[f64]| vec![backward_ref(&v[0], dy, d)];
        rows.extend(finite_diff("l2norm", &format!("{r}x{d}"), &["x"], &[x], &dy, &fwd, &bwd, rng));
    }
    rows
}

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let x = Tensor::zeros(gpu, &[batch, 128])?;
    let dy = Tensor::zeros(gpu, &[batch, 128])?;
    let n = x.numel() as f64;
    let desc = format!("{batch}x128");
    let x2 = x.clone();
    Ok(vec![
        BenchCase::new("l2norm", "forward", &desc, 3.0 * n, 8.0 * n, move |rec| forward(rec, &x).map(drop)),
        BenchCase::new("l2norm", "backward", &desc, 4.0 * n, 12.0 * n, move |rec| {
            let saved = L2Saved { y: x2.clone(), norms: Tensor::zeros(rec.gpu(), &[x2.shape[0]])? };
            backward(rec, &saved, &dy).map(drop)
        }),
    ])
}

pub const FAMILY: Family = Family { name: "l2norm", gradcheck, refcheck, bench };
