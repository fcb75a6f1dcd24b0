//! `train --recalibrate-bn` ("precise BN").

use crate::data::dataset::Sample;
use crate::data::input::Normalization;
use crate::data::Batch;
use crate::kernels::batchnorm::MOMENTUM;
use crate::models::Net;
use crate::nn::{Backend, GpuBackend};
use anyhow::Result;

/// With few optimiser steps per epoch the running statistics (an average
/// over steps whose weights kept changing) lag the network, and eval mode
/// collapses while training accuracy is high. This runs the fixed, final
/// weights in train mode over the training images (resize + normalise, no
/// augmentation), one pass in batches of `batch`, and sets every running
/// mean and variance to the average of the batches' statistics. Each batch
/// starts from zeroed running statistics, so the momentum update leaves
/// MOMENTUM x its own statistics there to read back. Weights and momentum
/// buffers are untouched, so training itself is unchanged.
pub fn recalibrate_bn<'g>(
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    samples: &[Sample],
    norm: &Normalization,
    batch: usize,
) -> Result<()> {
    let size = net.spec.input;
    let chunks: Vec<&[Sample]> = samples.chunks(batch.max(2)).filter(|c| c.len() > 1).collect();
    let names: Vec<(String, Vec<usize>)> = net
        .params
        .params
        .iter()
        .filter(|p| !p.trainable && (p.name.ends_with("running_mean") || p.name.ends_with("running_var")))
        .map(|p| (p.name.clone(), p.value.shape.clone()))
        .collect();
    if chunks.is_empty() || names.is_empty() {
        return Ok(());
    }
    let mut sums: Vec<Vec<f64>> = names.iter().map(|(_, shape)| vec![0.0; shape.iter().product()]).collect();
    for c in &chunks {
        let inputs = Batch::load(c, size, norm)?;
        let x = b.upload(&inputs.x, &inputs.shape())?;
        for ((name, shape), sum) in names.iter().zip(&sums) {
            let zeros = b.upload(&vec![0.0; sum.len()], shape)?;
            net.params.set(name, zeros);
        }
        net.logits_with(b, &x, true)?;
        for ((name, _), sum) in names.iter().zip(&mut sums) {
            for (s, v) in sum.iter_mut().zip(b.download(net.params.get(name))) {
                *s += f64::from(v) / f64::from(MOMENTUM);
            }
        }
    }
    for ((name, shape), sum) in names.iter().zip(&sums) {
        let mean: Vec<f32> = sum.iter().map(|s| (s / chunks.len() as f64) as f32).collect();
        let t = b.upload(&mean, shape)?;
        net.params.set(name, t);
    }
    Ok(())
}
