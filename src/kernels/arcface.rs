//! ArcFace logits (Deng et al. 2019): cos(theta) between L2-normalised
//! embeddings and L2-normalised class weights, s*cos(theta + m) for the true
//! class (with the standard guard below cos(pi - m)), s*cos(theta) for the
//! others. Gradients for the embeddings and the class weights.
//!
//! Composed on the GPU from `l2norm`, the matmul and the margin kernel of
//! `shaders/arcface.wgsl`; the reference below is the whole op in f64.

use super::{l2norm, linear::Gemm, upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, Launch, Params, Recorder, Shader, Tensor};
use crate::kernels::check::{compare_f32, finite_diff, stored, widen, CheckRow, Rng, Tol};
use anyhow::{bail, Result};
use std::f64::consts::PI;

/// Scale and additive angular margin. `m = 0` gives plain scaled cosine
/// logits, which is what classification at test time uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Margin {
    pub s: f64,
    pub m: f64,
}

impl Margin {
    /// phi(cos) for the true class, and d phi / d cos.
    fn phi(&self, c: f64) -> (f64, f64) {
        let (cos_m, sin_m) = (self.m.cos(), self.m.sin());
        if c > (PI - self.m).cos() {
            let sine = (1.0 - c * c).clamp(0.0, 1.0).sqrt();
            (c * cos_m - sine * sin_m, cos_m + sin_m * c / sine)
        } else {
            (c - (PI - self.m).sin() * self.m, 1.0)
        }
    }
    fn params(&self, b: usize, c: usize) -> Params {
        let m = self.m;
        Params::new()
            .u("b", b)
            .u("c", c)
            .f("s", self.s as f32)
            .f("cos_m", m.cos() as f32)
            .f("sin_m", m.sin() as f32)
            .f("th", (PI - m).cos() as f32)
            .f("mm", ((PI - m).sin() * m) as f32)
    }
}

/// Shapes: embeddings (b, d), class weights (c, d), labels (b).
#[derive(Clone, Copy, Debug)]
pub struct ArcFace {
    pub b: usize,
    pub d: usize,
    pub c: usize,
    pub margin: Margin,
}

impl ArcFace {
    pub fn describe(&self) -> String {
        format!("b{} d{} classes{} s{} m{}", self.b, self.d, self.c, self.margin.s, self.margin.m)
    }
}

// ---------------------------------------------------------------- reference

fn cosines(a: &ArcFace, e: &[f64], w: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (en, wn) = (l2norm::forward_ref(e, a.d), l2norm::forward_ref(w, a.d));
    let mut cos = vec![0.0; a.b * a.c];
    for i in 0..a.b {
        for j in 0..a.c {
            cos[i * a.c + j] = (0..a.d).map(|k| en[i * a.d + k] * wn[j * a.d + k]).sum();
        }
    }
    (en, wn, cos)
}

pub fn forward_ref(a: &ArcFace, e: &[f64], w: &[f64], labels: &[u32]) -> Vec<f64> {
    let (_, _, cos) = cosines(a, e, w);
    cos.iter()
        .enumerate()
        .map(|(i, &c)| a.margin.s * if i % a.c == labels[i / a.c] as usize { a.margin.phi(c).0 } else { c })
        .collect()
}

/// (d embeddings, d class weights)
pub fn backward_ref(a: &ArcFace, e: &[f64], w: &[f64], labels: &[u32], dlogits: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (en, wn, cos) = cosines(a, e, w);
    let dcos: Vec<f64> = (0..cos.len())
        .map(|i| {
            let slope = if i % a.c == labels[i / a.c] as usize { a.margin.phi(cos[i]).1 } else { 1.0 };
            a.margin.s * slope * dlogits[i]
        })
        .collect();
    let (mut den, mut dwn) = (vec![0.0; e.len()], vec![0.0; w.len()]);
    for i in 0..a.b {
        for j in 0..a.c {
            for k in 0..a.d {
                den[i * a.d + k] += dcos[i * a.c + j] * wn[j * a.d + k];
                dwn[j * a.d + k] += dcos[i * a.c + j] * en[i * a.d + k];
            }
        }
    }
    (l2norm::backward_ref(e, &den, a.d), l2norm::backward_ref(w, &dwn, a.d))
}

// ---------------------------------------------------------------------- GPU

const MARGIN_FORWARD: Kernel = Kernel::new(Shader::ArcFace, "forward", 64);
const MARGIN_BACKWARD: Kernel = Kernel::new(Shader::ArcFace, "backward", 64);

pub struct ArcSaved {
    emb: l2norm::L2Saved,
    weight: l2norm::L2Saved,
    cos: Tensor,
}

fn check_shapes(a: &ArcFace, e: &Tensor, w: &Tensor, labels: &Tensor) -> Result<()> {
    if e.shape != [a.b, a.d] || w.shape != [a.c, a.d] || labels.shape != [a.b] {
        bail!(
            "arcface {}: got embeddings {:?}, weights {:?}, labels {:?}",
            a.describe(),
            e.shape,
            w.shape,
            labels.shape
        );
    }
    Ok(())
}

/// Logits (b, c). `labels` is a u32 tensor.
pub fn forward(rec: &mut Recorder, a: &ArcFace, e: &Tensor, w: &Tensor, labels: &Tensor) -> Result<(Tensor, ArcSaved)> {
    check_shapes(a, e, w, labels)?;
    let emb = l2norm::forward(rec, e)?;
    let weight = l2norm::forward(rec, w)?;
    let cos = Tensor::zeros(rec.gpu(), &[a.b, a.c])?;
    // cos = en wn^T: wn read transposed through its strides.
    Gemm::plain(a.b, a.c, a.d, 1).b(0, 1, a.d).run(rec, &emb.y, &weight.y, None, &cos)?;
    let logits = Tensor::zeros(rec.gpu(), &[a.b, a.c])?;
    let args = [(1, Some(&cos)), (2, Some(labels)), (3, Some(&logits))];
    rec.dispatch(
        MARGIN_FORWARD,
        &a.margin.params(a.b, a.c),
        &args,
        Launch::threads(cos.numel(), MARGIN_FORWARD.wg, 1),
    )?;
    Ok((logits, ArcSaved { emb, weight, cos }))
}

/// (d embeddings, d class weights)
pub fn backward(
    rec: &mut Recorder,
    a: &ArcFace,
    saved: &ArcSaved,
    labels: &Tensor,
    dlogits: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let gpu = rec.gpu();
    let dcos = Tensor::zeros(gpu, &[a.b, a.c])?;
    let args = [(1, Some(&saved.cos)), (2, Some(labels)), (4, Some(dlogits)), (5, Some(&dcos))];
    rec.dispatch(
        MARGIN_BACKWARD,
        &a.margin.params(a.b, a.c),
        &args,
        Launch::threads(dcos.numel(), MARGIN_BACKWARD.wg, 1),
    )?;
    let (den, dwn) = (Tensor::zeros(gpu, &[a.b, a.d])?, Tensor::zeros(gpu, &[a.c, a.d])?);
    Gemm::plain(a.b, a.d, a.c, 1).run(rec, &dcos, &saved.weight.y, None, &den)?;
    // dwn = dcos^T en: A[j, i] = dcos[i, j]
    Gemm::plain(a.c, a.d, a.b, 1).a(0, 1, a.c).run(rec, &dcos, &saved.emb.y, None, &dwn)?;
    Ok((l2norm::backward(rec, &saved.emb, &den)?, l2norm::backward(rec, &saved.weight, &dwn)?))
}

// ------------------------------------------------------------------- checks

fn shapes(rng: &mut Rng) -> Vec<ArcFace> {
    let m = Margin { s: 64.0, m: 0.5 };
    vec![
        ArcFace { b: 4, d: 128, c: 10, margin: m },
        ArcFace { b: 3, d: 7, c: 5, margin: Margin { s: 32.0, m: 0.5 } },
        ArcFace { b: 5, d: 13, c: 17, margin: Margin { s: 30.0, m: 0.2 } },
        ArcFace { b: 2, d: 3, c: 2, margin: Margin { s: 1.0, m: 0.0 } },
        ArcFace { b: rng.range(1, 33), d: rng.range(3, 130), c: rng.range(2, 41), margin: m },
    ]
}

struct Inputs {
    e: Vec<f32>,
    w: Vec<f32>,
    labels: Vec<u32>,
    dlogits: Vec<f32>,
}

/// Random inputs; the first sample points away from its class so that the
/// guard branch (cos <= cos(pi - m)) is exercised as well as the margin.
fn inputs(a: &ArcFace, rng: &mut Rng) -> Inputs {
    let w = rng.uniform(a.c * a.d, -1.0, 1.0);
    let mut e = rng.uniform(a.b * a.d, -1.0, 1.0);
    let labels: Vec<u32> = (0..a.b).map(|_| rng.index(a.c) as u32).collect();
    let l0 = labels[0] as usize;
    for k in 0..a.d {
        e[k] = stored(-w[l0 * a.d + k] + 0.01 * e[k]);
    }
    Inputs { e, w, labels, dlogits: rng.uniform(a.b * a.c, -1.0, 1.0) }
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for a in shapes(rng) {
        let inp = inputs(&a, rng);
        let e = upload(gpu, &inp.e, &[a.b, a.d])?;
        let w = upload(gpu, &inp.w, &[a.c, a.d])?;
        let labels = Tensor::from_u32(gpu, &inp.labels, &[a.b])?;
        let dl = upload(gpu, &inp.dlogits, &[a.b, a.c])?;
        let mut rec = Recorder::new(gpu);
        let (logits, saved) = forward(&mut rec, &a, &e, &w, &labels)?;
        let (de, dw) = backward(&mut rec, &a, &saved, &labels, &dl)?;
        rec.submit();
        let (er, wr) = (widen(&inp.e), widen(&inp.w));
        let (der, dwr) = backward_ref(&a, &er, &wr, &inp.labels, &widen(&inp.dlogits));
        let shape = a.describe();
        rows.push(compare_f32(
            "arcface",
            "forward",
            &shape,
            &logits.to_vec(gpu),
            &forward_ref(&a, &er, &wr, &inp.labels),
            Tol::FORWARD,
        ));
        rows.push(compare_f32("arcface", "backward embeddings", &shape, &de.to_vec(gpu), &der, Tol::BACKWARD));
        rows.push(compare_f32("arcface", "backward class weights", &shape, &dw.to_vec(gpu), &dwr, Tol::BACKWARD));
    }
    Ok(rows)
}

fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for a in shapes(rng) {
        let inp = inputs(&a, rng);
        let labels = inp.labels.clone();
        let fwd = |v: &[Vec<f64>]| forward_ref(&a, &v[0], &v[1], &labels);
        let bwd = |v: &[Vec<f64>], dy: &[f64]| {
            let (de, dw) = backward_ref(&a, &v[0], &v[1], &labels, dy);
            vec![de, dw]
        };
        let args = [widen(&inp.e), widen(&inp.w)];
        rows.extend(finite_diff(
            "arcface",
            &a.describe(),
            &["embeddings", "weights"],
            &args,
            &widen(&inp.dlogits),
            &fwd,
            &bwd,
            rng,
        ));
    }
    rows
}

// -------------------------------------------------------------------- bench

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let a = ArcFace { b: batch, d: 128, c: 40, margin: Margin { s: 32.0, m: 0.5 } };
    let e = upload(gpu, &vec![1.0; a.b * a.d], &[a.b, a.d])?;
    let w = upload(gpu, &vec![1.0; a.c * a.d], &[a.c, a.d])?;
    let labels = Tensor::from_u32(gpu, &vec![0; a.b], &[a.b])?;
    let dl = Tensor::zeros(gpu, &[a.b, a.c])?;
    let flops = 2.0 * (a.b * a.c * a.d) as f64;
    let io = 4.0 * (e.numel() + w.numel() + dl.numel()) as f64;
    let (e2, w2, l2) = (e.clone(), w.clone(), labels.clone());
    Ok(vec![
        BenchCase::new("arcface", "forward", &a.describe(), flops, io, move |rec| {
            forward(rec, &a, &e, &w, &labels).map(drop)
        }),
        BenchCase::new("arcface", "forward+backward", &a.describe(), 4.0 * flops, 2.0 * io, move |rec| {
            let (_, saved) = forward(rec, &a, &e2, &w2, &l2)?;
            backward(rec, &a, &saved, &l2, &dl).map(drop)
        }),
    ])
}

pub const FAMILY: Family = Family { name: "arcface", gradcheck, refcheck, bench };
