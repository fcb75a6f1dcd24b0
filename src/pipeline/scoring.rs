//! A network's eval-mode logits over samples, and their loss and accuracy
//! (validation during training, `arcface eval`).

use crate::data::dataset::Sample;
use crate::data::input::Normalization;
use crate::data::loader;
use crate::models::Net;
use crate::nn::{Backend, GpuBackend};
use anyhow::{bail, Result};

/// Mean cross-entropy and correct count of eval logits (computed on the CPU).
pub fn score(logits: &[f32], labels: &[usize], classes: usize) -> (f64, usize) {
    let mut loss = 0.0;
    let mut correct = 0;
    for (row, &y) in logits.chunks(classes).zip(labels) {
        let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = mx + row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
        loss += lse - row[y] as f64;
        if argmax(row) == y {
            correct += 1;
        }
    }
    (loss / labels.len().max(1) as f64, correct)
}

pub fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

/// Eval-mode logits of samples, in batches (`batch_stats`: see `Net::logits_with`).
pub fn eval_logits<'g>(
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    samples: &[Sample],
    norm: &Normalization,
    batch: usize,
    batch_stats: bool,
) -> Result<Vec<f32>> {
    let size = net.spec.input;
    let mut out = Vec::new();
    // Decoded on one thread per core, a batch or two ahead of the GPU.
    loader::evaluation_batches(samples, batch, size, norm, loader::threads(0), |loaded| {
        if let Some((_, why)) = loaded.failed.first() {
            bail!("{why}");
        }
        let xt = b.upload(&loaded.batch.x, &loaded.batch.shape())?;
        let logits = net.logits_with(b, &xt, batch_stats)?;
        out.extend(b.download(&logits));
        Ok(true)
    })?;
    Ok(out)
}
