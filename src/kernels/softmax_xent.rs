//! Softmax over rows, and mean softmax cross-entropy with integer labels
//! (numerically stable: log-sum-exp around the row maximum).

use super::{reduction, reduction_launch, upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, Launch, Params, Recorder, Shader, Tensor};
use crate::kernels::check::{compare_f32, finite_diff, widen, CheckRow, Rng, Tol};
use anyhow::{bail, Result};

// ---------------------------------------------------------------- reference

pub fn softmax_ref(logits: &[f64], c: usize) -> Vec<f64> {
    logits
        .chunks(c)
        .flat_map(|row| {
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|v| (v - mx).exp()).sum();
            row.iter().map(move |v| (v - mx).exp() / s)
        })
        .collect()
}

/// Mean over the batch of -log softmax(logits)[label].
pub fn loss_ref(logits: &[f64], labels: &[u32], c: usize) -> f64 {
    let p = softmax_ref(logits, c);
    let b = labels.len();
    labels.iter().enumerate().map(|(r, &l)| -p[r * c + l as usize].ln()).sum::<f64>() / b as f64
}

/// d loss / d logits times the upstream gradient `dloss`.
pub fn backward_ref(logits: &[f64], labels: &[u32], c: usize, dloss: f64) -> Vec<f64> {
    backward_from_probs_ref(&softmax_ref(logits, c), labels, c, dloss)
}

/// The same from saved probabilities: (softmax - onehot) * dloss / B.
pub fn backward_from_probs_ref(probs: &[f64], labels: &[u32], c: usize, dloss: f64) -> Vec<f64> {
    let b = labels.len() as f64;
    let mut g = probs.to_vec();
    for (r, &l) in labels.iter().enumerate() {
        g[r * c + l as usize] -= 1.0;
    }
    g.iter().map(|v| v * dloss / b).collect()
}

/// The training tally after one more step (see `tally`): [loss sum,
/// correct, non-finite flag, first non-finite loss].
pub fn tally_ref(before: &[f64; 4], loss: f64, logits: &[f64], labels: &[u32], c: usize) -> [f64; 4] {
    let mut t = *before;
    if loss.is_finite() {
        let argmax = |row: &[f64]| (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best });
        let hits = logits.chunks(c).zip(labels).filter(|(row, &l)| argmax(row) == l as usize).count();
        t[0] += loss * labels.len() as f64;
        t[1] += hits as f64;
    } else if t[2] == 0.0 {
        t[2] = 1.0;
        t[3] = loss;
    }
    t
}

// ---------------------------------------------------------------------- GPU

const SOFTMAX: Kernel = Kernel::new(Shader::SoftmaxXent, "softmax", 256);
const MEAN_LOSS: Kernel = Kernel::new(Shader::SoftmaxXent, "mean_loss", 256);
const BACKWARD: Kernel = Kernel::new(Shader::SoftmaxXent, "backward", 64);
const TALLY: Kernel = Kernel::new(Shader::SoftmaxXent, "tally_step", 256);

fn dims(logits: &Tensor) -> Result<(usize, usize)> {
    match logits.shape[..] {
        [b, c] if b > 0 && c > 0 => Ok((b, c)),
        _ => bail!("softmax: logits must be (batch, classes), got {:?}", logits.shape),
    }
}

/// Row-wise softmax (detectors' class probabilities).
pub fn softmax(rec: &mut Recorder, logits: &Tensor) -> Result<Tensor> {
    let (b, c) = dims(logits)?;
    let probs = Tensor::uninit(rec.gpu(), &[b, c])?;
    let args = [(1, Some(logits)), (2, None), (3, Some(&probs)), (4, None)];
    let k = reduction(rec, SOFTMAX);
    rec.dispatch(k, &Params::new().u("b", b).u("c", c).u("has_labels", 0), &args, reduction_launch(k, b, c, 3))?;
    Ok(probs)
}

/// (mean loss [1], probabilities kept for the backward pass)
pub fn forward(rec: &mut Recorder, logits: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, c) = dims(logits)?;
    let gpu = rec.gpu();
    let (probs, rows, loss) = (Tensor::uninit(gpu, &[b, c])?, Tensor::uninit(gpu, &[b])?, Tensor::uninit(gpu, &[1])?);
    let p = Params::new().u("b", b).u("c", c).u("has_labels", 1);
    let (softmax, mean) = (reduction(rec, SOFTMAX), reduction(rec, MEAN_LOSS));
    let args = [(1, Some(logits)), (2, Some(labels)), (3, Some(&probs)), (4, Some(&rows))];
    rec.dispatch(softmax, &p, &args, reduction_launch(softmax, b, c, 3))?;
    rec.dispatch(mean, &p, &[(5, Some(&loss)), (9, Some(&rows))], reduction_launch(mean, 1, b, 1))?;
    Ok((loss, probs))
}

/// d logits, given the upstream gradient of the loss (a [1] tensor, 1.0 for training).
pub fn backward(rec: &mut Recorder, probs: &Tensor, labels: &Tensor, dloss: &Tensor) -> Result<Tensor> {
    let (b, c) = dims(probs)?;
    let dlogits = Tensor::uninit(rec.gpu(), &[b, c])?;
    let args = [(2, Some(labels)), (6, Some(dloss)), (7, Some(&dlogits)), (8, Some(probs))];
    rec.dispatch(
        BACKWARD,
        &Params::new().u("b", b).u("c", c).u("has_labels", 1),
        &args,
        Launch::threads(b * c, BACKWARD.wg, 1),
    )?;
    Ok(dlogits)
}

/// Adds a step's mean loss ([1]) and its logits' correct count (against
/// `labels`) to `tally` ([4]: loss sum, correct, non-finite flag, first
/// non-finite loss), on the GPU: a training loop reads it once in a while.
pub fn tally(rec: &mut Recorder, tally: &Tensor, loss: &Tensor, logits: &Tensor, labels: &Tensor) -> Result<()> {
    let (b, c) = dims(logits)?;
    if tally.numel() != 4 || loss.numel() != 1 || labels.numel() != b {
        bail!("tally: shapes {:?} {:?} {:?} {:?}", tally.shape, loss.shape, logits.shape, labels.shape);
    }
    if tally.dtype != crate::gpu::Dtype::F32 {
        bail!("tally: the running sums are f32 (an f16 sum of thousands of losses would stop growing)");
    }
    let args = [(1, Some(logits)), (2, Some(labels)), (5, Some(loss)), (10, Some(tally))];
    let k = reduction(rec, TALLY);
    let launch = Launch::groups(1, b.div_ceil(k.wg as usize) * c);
    rec.dispatch(k, &Params::new().u("b", b).u("c", c).u("has_labels", 1), &args, launch)
}

// ------------------------------------------------------------------- checks

fn shapes(rng: &mut Rng) -> Vec<(usize, usize)> {
    vec![(1, 1), (4, 10), (3, 257), (33, 7), (2, 1000), (rng.range(1, 40), rng.range(1, 300))]
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for (b, c) in shapes(rng) {
        // Large logits (as ArcFace's s = 64 produces) test the stability.
        let xs = rng.uniform(b * c, -60.0, 60.0);
        let labels: Vec<u32> = (0..b).map(|_| rng.index(c) as u32).collect();
        let dloss = rng.uniform(1, 0.5, 2.0);
        let x = upload(gpu, &xs, &[b, c])?;
        let l = Tensor::from_u32(gpu, &labels, &[b])?;
        let dl = upload(gpu, &dloss, &[1])?;
        let mut rec = Recorder::new(gpu);
        let probs = softmax(&mut rec, &x)?;
        let (loss, saved) = forward(&mut rec, &x, &l)?;
        let dx = backward(&mut rec, &saved, &l, &dl)?;
        rec.submit();
        let xr = widen(&xs);
        let shape = format!("b{b} c{c}");
        rows.push(compare_f32("softmax", "forward", &shape, &probs.to_vec(gpu), &softmax_ref(&xr, c), Tol::FORWARD));
        rows.push(compare_f32(
            "cross-entropy",
            "forward",
            &shape,
            &loss.to_vec(gpu),
            &[loss_ref(&xr, &labels, c)],
            Tol::FORWARD,
        ));
        let want = backward_ref(&xr, &labels, c, dloss[0] as f64);
        rows.push(compare_f32("cross-entropy", "backward logits", &shape, &dx.to_vec(gpu), &want, Tol::BACKWARD));
        rows.push(check_tally(gpu, rng, b, c, &xs, &labels)?);
    }
    Ok(rows)
}

/// Three steps into one tally: a finite loss, a non-finite one (recorded
/// once, not summed), then another finite one.
fn check_tally(gpu: &Gpu, rng: &mut Rng, b: usize, c: usize, xs: &[f32], labels: &[u32]) -> Result<CheckRow> {
    let before = [rng.uniform(1, 0.0, 9.0)[0], rng.range(0, 5) as f32, 0.0, 0.0];
    let losses = [rng.uniform(1, 0.1, 5.0)[0], f32::INFINITY, rng.uniform(1, 0.1, 5.0)[0]];
    // (f32 always, in the f16 checks too: `tally` refuses f16)
    let t = Tensor::from_f32(gpu, &before, &[4])?;
    let (x, l) = (upload(gpu, xs, &[b, c])?, Tensor::from_u32(gpu, labels, &[b])?);
    let mut want = before.map(|v| v as f64);
    let mut rec = Recorder::new(gpu);
    let mut keep = Vec::new();
    for loss in losses {
        let lt = upload(gpu, &[loss], &[1])?;
        tally(&mut rec, &t, &lt, &x, &l)?;
        want = tally_ref(&want, loss as f64, &widen(xs), labels, c);
        keep.push(lt);
    }
    rec.submit();
    let mut got = t.to_vec(gpu);
    // inf == inf, but compare by a finite stand-in.
    let (g3, w3) = (got[3], want[3]);
    got[3] = if g3 as f64 == w3 { 0.0 } else { f32::NAN };
    want[3] = 0.0;
    Ok(compare_f32("cross-entropy", "tally", &format!("b{b} c{c}"), &got, &want, Tol::FORWARD))
}

fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for (b, c) in shapes(rng) {
        let x = widen(&rng.uniform(b * c, -5.0, 5.0));
        let labels: Vec<u32> = (0..b).map(|_| rng.index(c) as u32).collect();
        let dy = widen(&rng.uniform(1, 0.5, 2.0));
        let fwd = |v: &[Vec<f64>]| vec![loss_ref(&v[0], &labels, c)];
        let bwd = |v: &[Vec<f64>], dy: &[f64]| vec![backward_ref(&v[0], &labels, c, dy[0])];
        rows.extend(finite_diff("cross-entropy", &format!("b{b} c{c}"), &["logits"], &[x], &dy, &fwd, &bwd, rng));
    }
    rows
}

// -------------------------------------------------------------------- bench

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let (b, c) = (batch, 40);
    let x = Tensor::zeros(gpu, &[b, c])?;
    let l = Tensor::from_u32(gpu, &vec![0; b], &[b])?;
    let dl = upload(gpu, &[1.0], &[1])?;
    let n = (b * c) as f64;
    let desc = format!("b{b} c{c}");
    let (x2, l2) = (x.clone(), l.clone());
    Ok(vec![
        BenchCase::new("cross-entropy", "forward", &desc, 4.0 * n, 8.0 * n, move |rec| forward(rec, &x, &l).map(drop)),
        BenchCase::new("cross-entropy", "backward", &desc, 2.0 * n, 8.0 * n, move |rec| {
            backward(rec, &x2, &l2, &dl).map(drop)
        }),
    ])
}

pub const FAMILY: Family = Family { name: "softmax_xent", gradcheck, refcheck, bench };
