//! `train --recalibrate-bn` ("precise BN").

use crate::data::dataset::Sample;
use crate::data::input::Normalization;
use crate::data::Batch;
use crate::models::Net;
use crate::nn::{Backend, GpuBackend};
use anyhow::Result;

/// Batches of train-mode forward passes after each epoch with
/// `--recalibrate-bn`: with momentum 0.1, 0.9^50 = 0.5% of the statistics
/// from before remain.
pub const RECALIBRATION_BATCHES: usize = 50;

/// With few optimiser steps per epoch the running statistics (an average
/// over steps whose weights kept changing) lag the network, and eval mode
/// collapses while training accuracy is high. This runs the fixed, final
/// weights in train mode over the training images (resize + normalise, no
/// augmentation) for at least one pass and `min_batches` batches, so the
/// running statistics describe these weights. Weights and momentum buffers
/// are untouched, so training itself is unchanged.
pub fn recalibrate_bn<'g>(
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    samples: &[Sample],
    norm: &Normalization,
    batch: usize,
    min_batches: usize,
) -> Result<()> {
    let size = net.spec.input;
    let chunks: Vec<&[Sample]> = samples.chunks(batch.max(2)).filter(|c| c.len() > 1).collect();
    if chunks.is_empty() {
        return Ok(());
    }
    // Uploaded once; the passes only read them.
    let mut batches = Vec::new();
    for c in chunks {
        let inputs = Batch::load(c, size, norm)?;
        batches.push(b.upload(&inputs.x, &inputs.shape())?);
    }
    for xt in batches.iter().cycle().take(min_batches.max(batches.len())) {
        net.logits_with(b, xt, true)?;
    }
    Ok(())
}
