//! `arcface bench infer`: embedding throughput, and what one steady-state
//! call asks of the device.

use crate::data::Batch;
use crate::gpu::timing::{by_kernel, KernelTime, Timestamps, MAX_PROFILED_DISPATCHES};
use crate::gpu::{Counts, Gpu, Tensor};
use crate::io::model_file::Model;
use crate::nn::{Backend, GpuBackend};
use anyhow::{bail, Result};
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
    /// Wall time of the first call: what it pays that later ones do not
    /// (compiling pipelines, allocating its buffers), beside `call_ms`.
    pub first_call_ms: f64,
    /// What one steady-state call asked of the device.
    pub per_call: Counts,
}

/// What `bench infer` computes: embeddings, or a classifier's logits.
fn output<'g>(model: &mut Model<GpuBackend<'g>>, b: &mut GpuBackend<'g>, x: &Tensor) -> Result<Tensor> {
    match model {
        Model::Trained(n, _) if !n.spec.has_embedding() => n.logits(b, x),
        Model::Trained(n, _) => n.embed(b, x),
        Model::Imported(g) => g.forward(b, x),
    }
}

/// One call as `embed` and `serve` make it: upload, forward, read back.
fn call<'g>(model: &mut Model<GpuBackend<'g>>, b: &mut GpuBackend<'g>, input: &Batch) -> Result<Vec<f32>> {
    let x = b.upload(&input.x, &input.shape())?;
    let out = output(model, b, &x)?;
    Ok(b.download(&out))
}

/// Where one call's GPU time goes.
#[derive(Serialize, Debug)]
pub struct InferProfile {
    pub by_kernel: Vec<KernelTime>,
    /// Every dispatch of the call, in order.
    pub dispatches: Vec<DispatchTime>,
}

#[derive(Serialize, Debug)]
pub struct DispatchTime {
    pub kernel: String,
    pub invocations: u64,
    pub ms: f64,
}

/// Timestamps for `profile_call` (made before the backend that uses them);
/// `None` where the adapter has none.
pub fn profile_timer(gpu: &Gpu) -> Option<Timestamps> {
    Timestamps::new(gpu, "dispatches", MAX_PROFILED_DISPATCHES)
}

/// One call of `model` on a batch of `batch`, each dispatch timed in its
/// own pass after warm-up calls.
pub fn profile_call<'g>(
    gpu: &'g Gpu,
    timer: &'g Timestamps,
    b: &mut GpuBackend<'g>,
    model: &mut Model<GpuBackend<'g>>,
    batch: usize,
) -> Result<InferProfile> {
    let input = Batch::synthetic(batch, model.input_size(), 1);
    for _ in 0..WARMUP_CALLS {
        call(model, b, &input)?;
    }
    let x = b.upload(&input.x, &input.shape())?;
    b.recorder().time_dispatches(timer.set(), 0);
    let out = output(model, b, &x)?;
    let launches: Vec<_> = b.recorder().launches().collect();
    if launches.len() > MAX_PROFILED_DISPATCHES as usize {
        bail!("a call of {} dispatches is more than --profile times ({MAX_PROFILED_DISPATCHES})", launches.len());
    }
    b.flush();
    let secs = timer.read(gpu, launches.len() as u32)?;
    drop(out);
    let dispatches = launches
        .iter()
        .zip(&secs)
        .map(|(l, s)| DispatchTime { kernel: l.kernel.label(), invocations: l.invocations, ms: s * 1e3 })
        .collect();
    Ok(InferProfile { by_kernel: by_kernel(&launches, &secs), dispatches })
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
    let started = Instant::now();
    let (first, first_call) = gpu.counters.during(|| call(model, b, &input));
    let first_call_ms = started.elapsed().as_secs_f64() * 1e3;
    first?;
    for _ in 1..WARMUP_CALLS {
        call(model, b, &input)?;
    }
    let (counted, per_call) = gpu.counters.during(|| call(model, b, &input));
    counted?;
    let mut times = Vec::new();
    for _ in 0..calls.max(1) {
        let start = Instant::now();
        call(model, b, &input)?;
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
        first_call_ms,
        per_call,
    })
}
