//! One epoch of SGD over the training split: seeded shuffle and
//! augmentation, images decoded and augmented by the streaming loader's
//! worker threads, a step per batch, the running loss and accuracy counted
//! on the GPU.

use super::TrainConfig;
use crate::data::augment::{self, Draw};
use crate::data::dataset::Sample;
use crate::data::loader;
use crate::gpu::readback::AsyncReader;
use crate::kernels::sgd::Sgd;
use crate::models::Net;
use crate::nn::{Backend, GpuBackend};
use crate::progress::Progress;
use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::time::Instant;

/// What an epoch of training measured.
pub struct EpochTrain {
    pub loss_sum: f64,
    pub seen: usize,
    pub correct: usize,
    pub seconds: f64,
    /// Set when the loss stopped being finite (the epoch ends there).
    pub diverged: Option<String>,
}

/// Batches decoded and augmented ahead of the GPU, per loader thread.
const LOADER_DEPTH: usize = 2;
/// Steps in flight on the GPU before recording waits for the oldest.
const IN_FLIGHT: usize = 2;

/// Epoch `epoch` (0-based): every epoch's shuffle and augmentation are
/// seeded by (seed, epoch), so a resumed run repeats them exactly (each
/// image's augmentation is drawn in batch order before the loader's
/// threads decode it). The loader builds the next batches while step k is
/// recorded and runs; an image that fails to decode is reported and left
/// out of its batch (a batch left with one image is skipped); the loss
/// and the correct count add up on the GPU (`GpuBackend::tally`), and the
/// host reads them without waiting (a running figure for the progress bar,
/// a non-finite loss stops the epoch a few steps late) and once, waiting,
/// at the end.
pub fn train_epoch<'g>(
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    cfg: &TrainConfig,
    train: &[Sample],
    epoch: usize,
    progress: &Progress,
) -> Result<EpochTrain> {
    net.freeze_backbone = epoch < cfg.freeze_backbone_epochs;
    let lr = cfg.lr_at(epoch);
    let h = Sgd { lr, momentum: cfg.momentum, weight_decay: cfg.weight_decay };
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)));
    let started = Instant::now();
    // A last batch of one image is left out: batch norm needs two.
    let batches: Vec<&[usize]> = order.chunks(cfg.batch_size).filter(|c| c.len() > 1).collect();
    let total: usize = batches.iter().map(|c| c.len()).sum();
    let gpu = b.gpu;
    let tally = b.zeros(&[4])?;
    let mut reader = AsyncReader::new(gpu, IN_FLIGHT + 2, 16);
    let mut in_flight = VecDeque::new();
    let mut seen = 0;
    let mut diverged = None;
    // What the model expects its pixels normalised with (an imported
    // network's own values).
    let norm = net.graph().normalization.clone();
    let aug_rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(7_919).wrapping_add(epoch as u64 + 1));
    let jobs = loader::augmented(batches.iter().copied(), aug_rng);
    let size = cfg.model.input;
    let threads = loader::threads(cfg.loader_threads);
    let transform = |img: &image::RgbImage, d: Draw| augment::apply(img, d, size, &norm);
    loader::stream(train, jobs, size, threads, LOADER_DEPTH, transform, |loaded| {
        for (_, why) in &loaded.failed {
            progress.line(&format!("skipped {why}"));
        }
        let batch = loaded.batch;
        if batch.len() < 2 {
            return Ok(true); // counted as skipped at the end
        }
        let xt = b.upload_batch(&batch.x, &batch.shape())?;
        let lt = b.labels(&batch.labels)?;
        let (loss, logits) = net.train_step(b, &xt, &lt, &h)?;
        b.tally(&tally, &loss, &logits, &lt)?;
        seen += batch.len();
        progress.inc(batch.len() as u64);
        reader.record(b.recorder(), &tally, seen);
        in_flight.push_back(b.flush());
        reader.submitted();
        if in_flight.len() > IN_FLIGHT {
            gpu.wait(in_flight.pop_front());
        }
        if let Some((at, t)) = reader.poll(gpu) {
            if let Some(why) = non_finite(&t, epoch, lr) {
                diverged = Some(why);
                return Ok(false);
            }
            progress.message(format!("epoch {}/{} loss {:.4}", epoch + 1, cfg.epochs, t[0] as f64 / at as f64));
        }
        Ok(true)
    })?;
    // The epoch's one waiting read.
    let t = b.download(&tally);
    progress.skip((total - seen) as u64);
    Ok(EpochTrain {
        loss_sum: t[0] as f64,
        seen,
        correct: t[1] as usize,
        seconds: started.elapsed().as_secs_f64(),
        diverged: diverged
            .or_else(|| non_finite(&t, epoch, lr))
            .map(|why| format!("{why}; try --lr {} (one tenth)", cfg.lr / 10.0)),
    })
}

/// The message for a tally that saw a non-finite loss.
fn non_finite(t: &[f32], epoch: usize, lr: f32) -> Option<String> {
    (t[2] != 0.0).then(|| format!("the training loss became {} in epoch {} (lr {lr})", t[3] as f64, epoch + 1))
}
