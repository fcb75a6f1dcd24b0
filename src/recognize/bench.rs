//! `arcface bench infer`: embedding throughput, and what one steady-state
//! call asks of the device.

use crate::data::Batch;
use crate::gpu::{Counts, Gpu};
use crate::io::model_file::Model;
use crate::nn::{Backend, GpuBackend};
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

/// Calls before measuring: pipelines compiled, pool and bind groups filled.
const WARMUP_CALLS: usize = 3;

#[derive(Serialize, Debug)]
pub struct InferThroughput {
    pub adapter: String,
    pub model: String,
    pub batch: usize,
    pub images_per_s: f64,
    /// Wall time of one call (upload, forward, read the results back):
    /// the median of the timed calls.
    pub call_ms: f64,
    /// The 99th percentile of the timed calls (their slowest, under 100).
    pub p99_ms: f64,
    /// Device memory the first call allocated (its values and scratch; the
    /// weights were uploaded before): what inference needs beyond the model.
    pub first_call_bytes: u64,
    /// What one steady-state call asked of the device.
    pub per_call: Counts,
}

/// Embeddings (classifier logits for MiniNetwork) of a fixed batch, read
/// back each call as `embed` and `serve` do; median over `calls`.
pub fn infer_throughput<'g>(
    gpu: &'g Gpu,
    b: &mut GpuBackend<'g>,
    model: &mut Model<GpuBackend<'g>>,
    batch: usize,
    calls: usize,
) -> Result<InferThroughput> {
    let size = model.input_size();
    let name = match model {
        Model::Trained(n, _) => format!("{:?}", n.spec.arch),
        Model::Imported(g) => format!("imported {}", g.def().source),
    };
    let input = Batch::synthetic(batch, size, 1);
    let mut call = |b: &mut GpuBackend<'g>| -> Result<Vec<f32>> {
        let x = b.upload(&input.x, &input.shape())?;
        let out = match model {
            Model::Trained(n, _) if !n.spec.has_embedding() => n.logits(b, &x)?,
            Model::Trained(n, _) => n.embed(b, &x)?,
            Model::Imported(g) => g.forward(b, &x)?,
        };
        Ok(b.download(&out))
    };
    let (first, first_call) = gpu.counters.during(|| call(b));
    first?;
    for _ in 1..WARMUP_CALLS {
        call(b)?;
    }
    let (counted, per_call) = gpu.counters.during(|| call(b));
    counted?;
    let mut times = Vec::new();
    for _ in 0..calls.max(1) {
        let start = Instant::now();
        call(b)?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let t = times[times.len() / 2];
    let p99 = times[((times.len() * 99).div_ceil(100)).saturating_sub(1)];
    Ok(InferThroughput {
        adapter: gpu.info.name.clone(),
        model: name,
        batch,
        images_per_s: batch as f64 / t,
        call_ms: t * 1e3,
        p99_ms: p99 * 1e3,
        first_call_bytes: first_call.bytes_allocated,
        per_call,
    })
}
