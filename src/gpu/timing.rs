//! Timing recorded GPU work (`arcface bench kernels`, `benches/`): the median
//! GPU time of a benchmark case, e.g. one kernel family's forward or backward
//! at a MobileFaceNet or MiniNetwork shape.
//!
//! Time comes from timestamp queries written at the start and end of every
//! compute pass (one pass per dispatch), summed over the dispatches of one
//! repeat. Adapters without timestamp queries are timed by the CPU clock
//! around a whole submission and its completion, and the table says so.

use super::{Gpu, Launched, Recorder};
use anyhow::{bail, Result};
use serde::Serialize;
use std::time::Instant;

type Run = Box<dyn Fn(&mut Recorder) -> Result<()>>;

/// One benchmarked operation: records its dispatches into a recorder.
pub struct BenchCase {
    pub kernel: String,
    pub direction: String,
    pub shape: String,
    pub flops: f64,
    /// Minimum bytes moved: every input read once and every output written once.
    pub bytes: f64,
    run: Run,
}

impl BenchCase {
    pub fn new(
        kernel: &str,
        direction: &str,
        shape: &str,
        flops: f64,
        bytes: f64,
        run: impl Fn(&mut Recorder) -> Result<()> + 'static,
    ) -> BenchCase {
        BenchCase {
            kernel: kernel.into(),
            direction: direction.into(),
            shape: shape.into(),
            flops,
            bytes,
            run: Box::new(run),
        }
    }
}

#[derive(Serialize, Debug)]
pub struct BenchRow {
    pub kernel: String,
    pub direction: String,
    pub shape: String,
    pub median_ms: f64,
    pub gflops: f64,
    pub gbps: f64,
    pub timer: &'static str,
    /// The parallelism of the case's longest-running dispatch: its
    /// invocations and the iterations of the longest loop one of them runs
    /// (as sized by the kernel's own dispatch code, so known without a GPU).
    pub invocations: u64,
    pub serial_iterations: u64,
    /// Dispatches per run of the case.
    pub dispatches: usize,
}

/// The dispatch of `launches` with the longest serial loop.
pub fn longest(launches: &[Launched]) -> Option<Launched> {
    launches.iter().copied().max_by_key(|l| (l.serial, std::cmp::Reverse(l.invocations)))
}

/// GPU time of one kernel entry point over one profiled step or call.
#[derive(Serialize, Debug)]
pub struct KernelTime {
    pub kernel: String,
    pub dispatches: usize,
    pub ms: f64,
    /// Share of the summed dispatch time.
    pub share: f64,
}

/// Timestamp pairs of one profiled step or call (wgpu allows 4,096 queries per set).
pub const MAX_PROFILED_DISPATCHES: u32 = 2048;

/// Dispatch times (seconds, one per launch, in order) summed by kernel
/// entry point, largest first.
pub fn by_kernel(launches: &[Launched], secs: &[f64]) -> Vec<KernelTime> {
    let mut by: Vec<KernelTime> = Vec::new();
    for (l, s) in launches.iter().zip(secs) {
        let name = l.kernel.label();
        match by.iter_mut().find(|k| k.kernel == name) {
            Some(k) => (k.dispatches, k.ms) = (k.dispatches + 1, k.ms + s * 1e3),
            None => by.push(KernelTime { kernel: name, dispatches: 1, ms: s * 1e3, share: 0.0 }),
        }
    }
    let total: f64 = by.iter().map(|k| k.ms).sum();
    for k in &mut by {
        k.share = k.ms / total.max(1e-12);
    }
    by.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    by
}

/// Dispatches one bench case may time.
const CASE_DISPATCHES: u32 = 64;

fn wait(gpu: &Gpu) {
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("waiting for the GPU");
}

/// The dispatches one run of `case` records (recorded, not submitted).
pub fn launches_of(gpu: &Gpu, case: &BenchCase) -> Result<Vec<Launched>> {
    let mut rec = Recorder::new(gpu);
    (case.run)(&mut rec)?;
    Ok(rec.launches().collect())
}

/// Seconds of GPU time for one run of `case`: timestamps around each of its
/// dispatches where the adapter has them, else the CPU clock around the
/// whole submission.
fn time_once(gpu: &Gpu, case: &BenchCase, stamps: Option<&Timestamps>) -> Result<f64> {
    let mut rec = Recorder::new(gpu);
    let Some(stamps) = stamps else {
        (case.run)(&mut rec)?;
        let start = Instant::now();
        rec.submit();
        wait(gpu);
        return Ok(start.elapsed().as_secs_f64());
    };
    rec.time_dispatches(stamps.set(), 0);
    (case.run)(&mut rec)?;
    let pairs = rec.timestamp_slots_used(0) / 2;
    if pairs > stamps.pairs {
        bail!("bench case {} {} records more than {} dispatches", case.kernel, case.direction, stamps.pairs);
    }
    rec.submit_then(|enc| stamps.encode_resolve(enc, pairs));
    Ok(stamps.seconds(gpu, pairs)?.iter().sum())
}

/// The median time of each case over `repeats` runs after one warm-up.
pub fn run(gpu: &Gpu, cases: &[BenchCase], repeats: usize) -> Result<Vec<BenchRow>> {
    let stamps = Timestamps::new(gpu, "bench", CASE_DISPATCHES);
    let mut rows = Vec::new();
    for case in cases {
        let launches = launches_of(gpu, case)?;
        let top = longest(&launches);
        time_once(gpu, case, stamps.as_ref())?; // warm-up: pipelines, caches
        let mut times: Vec<f64> =
            (0..repeats.max(1)).map(|_| time_once(gpu, case, stamps.as_ref())).collect::<Result<_>>()?;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        rows.push(BenchRow {
            kernel: case.kernel.clone(),
            direction: case.direction.clone(),
            shape: case.shape.clone(),
            median_ms: median * 1e3,
            gflops: case.flops / median * 1e-9,
            gbps: case.bytes / median * 1e-9,
            timer: if stamps.is_some() { "gpu-timestamp" } else { "cpu-wall" },
            invocations: top.map_or(0, |l| l.invocations),
            serial_iterations: top.map_or(0, |l| l.serial),
            dispatches: launches.len(),
        });
    }
    Ok(rows)
}

/// Timestamp queries in pairs (start, end), with the buffers to read them
/// back, where the adapter has timestamp queries: one pair per timed
/// dispatch (`Recorder::time_dispatches`) or one for a whole submission
/// (`Recorder::time_submission`).
pub struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    pairs: u32,
}

impl Timestamps {
    /// Room for `pairs` (start, end) pairs; `None` without timestamp queries.
    pub fn new(gpu: &Gpu, label: &str, pairs: u32) -> Option<Timestamps> {
        if !gpu.has_timestamps() {
            return None;
        }
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some(label),
            ty: wgpu::QueryType::Timestamp,
            count: pairs * 2,
        });
        let buffer = |usage| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: pairs as u64 * 16,
                usage,
                mapped_at_creation: false,
            })
        };
        let resolve = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let readback = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        Some(Timestamps { set, resolve, readback, pairs })
    }

    pub fn set(&self) -> &wgpu::QuerySet {
        &self.set
    }

    /// Encodes the resolve of the first `pairs` pairs into the read-back buffer.
    pub fn encode_resolve(&self, enc: &mut wgpu::CommandEncoder, pairs: u32) {
        enc.resolve_query_set(&self.set, 0..pairs * 2, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, pairs as u64 * 16);
    }

    /// Seconds between start and end of the first `pairs` pairs, once the
    /// submission holding `encode_resolve` is done (waits for it).
    fn seconds(&self, gpu: &Gpu, pairs: u32) -> Result<Vec<f64>> {
        self.readback.map_async(wgpu::MapMode::Read, .., |r| r.expect("mapping timestamps"));
        wait(gpu);
        let bytes = self.readback.get_mapped_range(..)?.to_vec();
        self.readback.unmap();
        let ticks: &[u64] = bytemuck::cast_slice(&bytes[..pairs as usize * 16]);
        let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(ticks.chunks(2).map(|p| p[1].saturating_sub(p[0]) as f64 * period).collect())
    }

    /// Seconds of each of the first `pairs` pairs written by work already
    /// submitted: resolves them in a submission of their own and waits.
    pub fn read(&self, gpu: &Gpu, pairs: u32) -> Result<Vec<f64>> {
        if pairs > self.pairs {
            bail!("{pairs} timestamp pairs read with room for {}", self.pairs);
        }
        gpu.submit(|enc| self.encode_resolve(enc, pairs));
        gpu.submitted();
        self.seconds(gpu, pairs)
    }
}
