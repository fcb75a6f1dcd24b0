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

const SLOTS: u32 = 64;

fn wait(gpu: &Gpu) {
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("waiting for the GPU");
}

/// The dispatches one run of `case` records (recorded, not submitted).
pub fn launches_of(gpu: &Gpu, case: &BenchCase) -> Result<Vec<Launched>> {
    let mut rec = Recorder::new(gpu);
    (case.run)(&mut rec)?;
    Ok(rec.launches().collect())
}

/// Seconds of GPU time for one run of `case`.
fn time_once(
    gpu: &Gpu,
    case: &BenchCase,
    queries: Option<&(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer)>,
) -> Result<f64> {
    let mut rec = Recorder::new(gpu);
    let Some((set, resolve, readback)) = queries else {
        (case.run)(&mut rec)?;
        let start = Instant::now();
        rec.submit();
        wait(gpu);
        return Ok(start.elapsed().as_secs_f64());
    };
    rec.time_dispatches(set, 0);
    (case.run)(&mut rec)?;
    let used = rec.timestamp_slots_used(0);
    if used > SLOTS {
        bail!("bench case {} {} records more than {} dispatches", case.kernel, case.direction, SLOTS / 2);
    }
    rec.submit_then(|enc| {
        enc.resolve_query_set(set, 0..used, resolve, 0);
        enc.copy_buffer_to_buffer(resolve, 0, readback, 0, used as u64 * 8);
    });
    readback.map_async(wgpu::MapMode::Read, .., |r| r.expect("mapping timestamps"));
    wait(gpu);
    let ticks: Vec<u64> = bytemuck::cast_slice(&readback.get_mapped_range(..)?.to_vec()[..used as usize * 8]).to_vec();
    readback.unmap();
    let total: u64 = ticks.chunks(2).map(|p| p[1].saturating_sub(p[0])).sum();
    Ok(total as f64 * gpu.queue.get_timestamp_period() as f64 * 1e-9)
}

/// The median time of each case over `repeats` runs after one warm-up.
pub fn run(gpu: &Gpu, cases: &[BenchCase], repeats: usize) -> Result<Vec<BenchRow>> {
    let queries = gpu.has_timestamps().then(|| {
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench"),
            ty: wgpu::QueryType::Timestamp,
            count: SLOTS,
        });
        let buffer = |usage| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: SLOTS as u64 * 8,
                usage,
                mapped_at_creation: false,
            })
        };
        let resolve = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let readback = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        (set, resolve, readback)
    });
    let mut rows = Vec::new();
    for case in cases {
        let launches = launches_of(gpu, case)?;
        let top = longest(&launches);
        time_once(gpu, case, queries.as_ref())?; // warm-up: pipelines, caches
        let mut times: Vec<f64> =
            (0..repeats.max(1)).map(|_| time_once(gpu, case, queries.as_ref())).collect::<Result<_>>()?;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        rows.push(BenchRow {
            kernel: case.kernel.clone(),
            direction: case.direction.clone(),
            shape: case.shape.clone(),
            median_ms: median * 1e3,
            gflops: case.flops / median * 1e-9,
            gbps: case.bytes / median * 1e-9,
            timer: if queries.is_some() { "gpu-timestamp" } else { "cpu-wall" },
            invocations: top.map_or(0, |l| l.invocations),
            serial_iterations: top.map_or(0, |l| l.serial),
            dispatches: launches.len(),
        });
    }
    Ok(rows)
}

/// GPU time of a whole submission (`Recorder::time_submission`), where the
/// adapter has timestamp queries.
pub struct SubmissionTimer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
}

impl SubmissionTimer {
    pub fn new(gpu: &Gpu) -> Option<SubmissionTimer> {
        if !gpu.has_timestamps() {
            return None;
        }
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("submission"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let buffer = |usage| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        let resolve = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let readback = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        Some(SubmissionTimer { set, resolve, readback })
    }

    /// The query set to hand to `Recorder::time_submission`.
    pub fn set(&self) -> wgpu::QuerySet {
        self.set.clone()
    }

    /// Milliseconds between the two timestamps of the last timed submission
    /// (waits for it).
    pub fn read_ms(&self, gpu: &Gpu) -> f64 {
        gpu.submit(|enc| {
            enc.resolve_query_set(&self.set, 0..2, &self.resolve, 0);
            enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, 16);
        });
        gpu.submitted();
        self.readback.map_async(wgpu::MapMode::Read, .., |r| r.expect("mapping timestamps"));
        wait(gpu);
        let t: Vec<u64> = bytemuck::cast_slice(&self.readback.get_mapped_range(..).expect("mapped")).to_vec();
        self.readback.unmap();
        t[1].saturating_sub(t[0]) as f64 * gpu.queue.get_timestamp_period() as f64 * 1e-6
    }
}

/// GPU time of every dispatch of one submission (`Recorder::time_dispatches`,
/// each dispatch in its own pass), where the adapter has timestamp queries.
pub struct DispatchTimer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    slots: u32,
}

impl DispatchTimer {
    /// Room for `dispatches` dispatches.
    pub fn new(gpu: &Gpu, dispatches: u32) -> Option<DispatchTimer> {
        if !gpu.has_timestamps() {
            return None;
        }
        let slots = dispatches * 2;
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("dispatches"),
            ty: wgpu::QueryType::Timestamp,
            count: slots,
        });
        let buffer = |usage| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: slots as u64 * 8,
                usage,
                mapped_at_creation: false,
            })
        };
        let resolve = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let readback = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        Some(DispatchTimer { set, resolve, readback, slots })
    }

    pub fn set(&self) -> &wgpu::QuerySet {
        &self.set
    }

    /// Seconds of each of the first `dispatches` timed dispatches (waits).
    pub fn read(&self, gpu: &Gpu, dispatches: u32) -> Result<Vec<f64>> {
        let used = dispatches * 2;
        if used > self.slots {
            bail!("{dispatches} dispatches timed with room for {}", self.slots / 2);
        }
        gpu.submit(|enc| {
            enc.resolve_query_set(&self.set, 0..used, &self.resolve, 0);
            enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, used as u64 * 8);
        });
        gpu.submitted();
        self.readback.map_async(wgpu::MapMode::Read, .., |r| r.expect("mapping timestamps"));
        wait(gpu);
        let bytes = self.readback.get_mapped_range(..)?.to_vec();
        self.readback.unmap();
        let ticks: &[u64] = bytemuck::cast_slice(&bytes[..used as usize * 8]);
        let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(ticks.chunks(2).map(|p| p[1].saturating_sub(p[0]) as f64 * period).collect())
    }
}
