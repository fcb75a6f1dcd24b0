//! One epoch of SGD over the training split: seeded shuffle and
//! augmentation, a step per batch, the running loss and accuracy.

use super::TrainConfig;
use crate::data::augment;
use crate::data::dataset::Sample;
use crate::data::input::{open_rgb, Normalization};
use crate::data::Batch;
use crate::kernels::sgd::Sgd;
use crate::models::Net;
use crate::nn::{Backend, GpuBackend};
use crate::pipeline::scoring::argmax;
use anyhow::Result;
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Decoded images of a split, kept in memory across epochs.
pub struct Images(HashMap<PathBuf, image::RgbImage>);

impl Images {
    pub fn load(samples: &[Sample]) -> Result<Images> {
        let mut m = HashMap::new();
        for s in samples {
            m.insert(s.path.clone(), open_rgb(&s.path)?);
        }
        Ok(Images(m))
    }

    fn get(&self, p: &Path) -> &image::RgbImage {
        &self.0[p]
    }
}

/// What an epoch of training measured.
pub struct EpochTrain {
    pub loss_sum: f64,
    pub seen: usize,
    pub correct: usize,
    pub seconds: f64,
    /// Set when the loss stopped being finite (the epoch ends there).
    pub diverged: Option<String>,
}

/// Epoch `epoch` (0-based): every epoch's shuffle and augmentation are
/// seeded by (seed, epoch), so a resumed run repeats them exactly.
pub fn train_epoch<'g>(
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    cfg: &TrainConfig,
    train: &[Sample],
    images: &Images,
    epoch: usize,
    quiet: bool,
) -> Result<EpochTrain> {
    net.freeze_backbone = epoch < cfg.freeze_backbone_epochs;
    let lr = cfg.lr_at(epoch);
    let h = Sgd { lr, momentum: cfg.momentum, weight_decay: cfg.weight_decay };
    let norm = Normalization::default();
    let size = cfg.model.input;
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)));
    let mut aug_rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(7_919).wrapping_add(epoch as u64 + 1));
    let started = Instant::now();
    let mut t = EpochTrain { loss_sum: 0.0, seen: 0, correct: 0, seconds: 0.0, diverged: None };
    // A last batch of one image is left out: batch norm needs two.
    let batches: Vec<&[usize]> = order.chunks(cfg.batch_size).filter(|c| c.len() > 1).collect();
    let total: usize = batches.iter().map(|c| c.len()).sum();
    for indices in batches {
        let mut batch = Batch::new(size, indices.len());
        for &i in indices {
            let s = &train[i];
            batch.push(&augment::augment(images.get(&s.path), size, &norm, &mut aug_rng), s.label as u32);
        }
        let xt = b.upload(&batch.x, &batch.shape())?;
        let lt = b.labels(&batch.labels)?;
        let (loss, logits) = net.train_step(b, &xt, &lt, &h)?;
        let loss = b.download(&loss)[0] as f64;
        if !loss.is_finite() {
            t.diverged = Some(format!("the training loss became {loss} in epoch {} (lr {lr})", epoch + 1));
            break;
        }
        let logits = b.download(&logits);
        for (row, &y) in logits.chunks(cfg.model.classes).zip(&batch.labels) {
            t.correct += (argmax(row) == y as usize) as usize;
        }
        t.loss_sum += loss * batch.len() as f64;
        t.seen += batch.len();
        if !quiet {
            let rate = t.seen as f64 / started.elapsed().as_secs_f64();
            progress(epoch + 1, cfg.epochs, t.seen, total, t.loss_sum / t.seen as f64, rate);
        }
    }
    if !quiet {
        eprintln!();
    }
    t.seconds = started.elapsed().as_secs_f64();
    Ok(t)
}

fn progress(epoch: usize, epochs: usize, done: usize, total: usize, loss: f64, rate: f64) {
    let width = 24;
    let filled = width * done / total.max(1);
    let eta = (total - done) as f64 / rate.max(1e-9);
    eprint!(
        "\repoch {epoch}/{epochs} [{}{}] {done}/{total} loss {loss:.4} {rate:.1} img/s ETA {:.0}s   ",
        "#".repeat(filled),
        ".".repeat(width - filled),
        eta
    );
    let _ = std::io::stderr().flush();
}
