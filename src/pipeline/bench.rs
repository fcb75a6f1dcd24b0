//! `arcface bench train`: the throughput of whole training steps.

use crate::data::Batch;
use crate::gpu::Gpu;
use crate::kernels::sgd::Sgd;
use crate::models::{ModelSpec, Net};
use crate::nn::{Backend, GpuBackend};
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize, Debug)]
pub struct TrainThroughput {
    pub adapter: String,
    pub seconds_per_step: f64,
    pub images_per_second: f64,
}

/// Whole training steps (forward, loss, backward, SGD) on random inputs,
/// each submitted and waited for; median over `steps` after one warm-up.
pub fn train_throughput(gpu: &Gpu, spec: ModelSpec, batch: usize, steps: usize) -> Result<TrainThroughput> {
    let mut b = GpuBackend::new(gpu)?;
    let mut net = Net::init(&mut b, spec, 0)?;
    let batch_in = Batch::synthetic(batch, spec.input, spec.classes);
    let h = Sgd { lr: 1e-3, momentum: 0.9, weight_decay: 5e-4 };
    let mut times = Vec::new();
    for i in 0..=steps.max(1) {
        let xt = b.upload(&batch_in.x, &batch_in.shape())?;
        let lt = b.labels(&batch_in.labels)?;
        let start = Instant::now();
        let (loss, _) = net.train_step(&mut b, &xt, &lt, &h)?;
        b.download(&loss);
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let t = times[times.len() / 2];
    Ok(TrainThroughput { adapter: gpu.info.name.clone(), seconds_per_step: t, images_per_second: batch as f64 / t })
}
