//! `arcface bench train`: the throughput of whole training steps, and what
//! one steady-state step asks of the device.

use crate::data::Batch;
use crate::gpu::timing::{by_kernel, KernelTime, Timestamps, MAX_PROFILED_DISPATCHES};
use crate::gpu::{Counts, Gpu};
use crate::kernels::sgd::Sgd;
use crate::models::{ModelSpec, Net};
use crate::nn::{Backend, GpuBackend};
use crate::pipeline::train::Precision;
use anyhow::{bail, Result};
use serde::Serialize;
use std::time::Instant;

/// Steps run before measuring: pipelines compiled, the buffer pool and the
/// bind-group cache filled (a buffer freed in step k is reused in step k+1).
const WARMUP_STEPS: usize = 5;

#[derive(Serialize, Debug)]
pub struct TrainThroughput {
    pub adapter: String,
    pub batch: usize,
    /// How activations were stored: "f32", or "f16" (mixed precision).
    pub precision: &'static str,
    pub images_per_s: f64,
    /// Wall time per step with steps queued back to back (at most one
    /// waiting behind the running one).
    pub step_ms: f64,
    /// CPU time to record the step and submit it (the batch's upload
    /// aside), with the GPU idle (behind running work a submission may wait).
    pub record_ms: f64,
    /// GPU time of one step's work (timestamps), where the adapter has them.
    pub gpu_ms: Option<f64>,
    /// Wall time of the first step, recorded, run and waited for: what it
    /// pays that steady steps do not (compiling pipelines, growing the
    /// buffer pool), beside `step_ms`.
    pub first_step_ms: f64,
    /// What one steady-state step asked of the device.
    pub per_step: Counts,
    /// The same as `step_ms` and `images_per_s` (names of earlier reports).
    pub seconds_per_step: f64,
    pub images_per_second: f64,
}

/// Whole training steps (forward, loss, backward, SGD) of a freshly
/// initialised `spec` on a fixed batch, as the training loop runs them.
pub fn train_throughput(
    gpu: &Gpu,
    spec: ModelSpec,
    batch: usize,
    steps: usize,
    precision: Precision,
) -> Result<TrainThroughput> {
    let mut b = backend(gpu, precision)?;
    let mut net = Net::init(&mut b, spec, 0)?;
    step_throughput(gpu, &mut b, &mut net, batch, steps)
}

/// A backend that trains in `precision`.
fn backend(gpu: &Gpu, precision: Precision) -> Result<GpuBackend<'_>> {
    let mut b = GpuBackend::new(gpu)?;
    if precision == Precision::F16 {
        b.mixed_precision()?;
    }
    Ok(b)
}

/// Whole training steps of `net` on a fixed batch, as the training loop
/// runs them: nothing read back.
pub fn step_throughput<'g>(
    gpu: &'g Gpu,
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    batch: usize,
    steps: usize,
) -> Result<TrainThroughput> {
    let spec = net.spec;
    let input = Batch::synthetic(batch, spec.input, spec.classes);
    let h = Sgd { lr: 1e-3, momentum: 0.9, weight_decay: 5e-4 };
    let timer = Timestamps::new(gpu, "submission", 1);
    let mut step = |timed: bool| run_step(b, net, &input, &h, timer.as_ref().filter(|_| timed));
    let first = Instant::now();
    step(false)?;
    gpu.wait(None);
    let first_step_ms = first.elapsed().as_secs_f64() * 1e3;
    for _ in 1..WARMUP_STEPS {
        step(false)?;
        gpu.wait(None);
    }
    let (counted, per_step) = gpu.counters.during(|| step(true));
    let (index, record_s) = counted?;
    gpu.wait(Some(index));
    let gpu_ms = timer.as_ref().map(|t| t.read(gpu, 1).map(|s| s[0] * 1e3)).transpose()?;

    let steps = steps.max(1);
    let started = Instant::now();
    let mut in_flight = None;
    for _ in 0..steps {
        let (index, _) = step(false)?;
        if let Some(previous) = in_flight.replace(index) {
            gpu.wait(Some(previous));
        }
    }
    gpu.wait(None);
    let step_s = started.elapsed().as_secs_f64() / steps as f64;
    Ok(TrainThroughput {
        adapter: gpu.info.name.clone(),
        batch,
        precision: if b.loss_scale().is_some() { Precision::F16 } else { Precision::F32 }.name(),
        images_per_s: batch as f64 / step_s,
        step_ms: step_s * 1e3,
        record_ms: record_s * 1e3,
        gpu_ms,
        first_step_ms,
        per_step,
        seconds_per_step: step_s,
        images_per_second: batch as f64 / step_s,
    })
}

/// Uploads the batch, records one training step and submits it; returns the
/// submission and the CPU seconds that recording and submitting took.
fn run_step<'g>(
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    input: &Batch,
    h: &Sgd,
    timer: Option<&Timestamps>,
) -> Result<(wgpu::SubmissionIndex, f64)> {
    let xt = b.upload_batch(&input.x, &input.shape())?;
    let lt = b.labels(&input.labels)?;
    let start = Instant::now();
    net.train_step(b, &xt, &lt, h)?;
    if let Some(t) = timer {
        b.recorder().time_submission(t.set().clone());
    }
    let index = b.flush();
    Ok((index, start.elapsed().as_secs_f64()))
}

/// Where one training step of a fresh `spec` spends its GPU time, by
/// kernel entry point, largest first (each dispatch timed in its own pass,
/// after a warm-up step). Empty where the adapter has no timestamps.
pub fn profile_step(gpu: &Gpu, spec: ModelSpec, batch: usize, precision: Precision) -> Result<Vec<KernelTime>> {
    let mut b = backend(gpu, precision)?;
    let mut net = Net::init(&mut b, spec, 0)?;
    let input = Batch::synthetic(batch, spec.input, spec.classes);
    let h = Sgd { lr: 1e-3, momentum: 0.9, weight_decay: 5e-4 };
    run_step(&mut b, &mut net, &input, &h, None)?;
    gpu.wait(None);
    let Some(timer) = Timestamps::new(gpu, "dispatches", MAX_PROFILED_DISPATCHES) else { return Ok(Vec::new()) };
    let (xt, lt) = (b.upload_batch(&input.x, &input.shape())?, b.labels(&input.labels)?);
    b.recorder().time_dispatches(timer.set(), 0);
    net.train_step(&mut b, &xt, &lt, &h)?;
    let launches: Vec<_> = b.recorder().launches().collect();
    if launches.len() > MAX_PROFILED_DISPATCHES as usize {
        bail!("a step of {} dispatches is more than --profile times ({MAX_PROFILED_DISPATCHES})", launches.len());
    }
    b.flush();
    let secs = timer.read(gpu, launches.len() as u32)?;
    Ok(by_kernel(&launches, &secs))
}
