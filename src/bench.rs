//! `arcface bench kernels`: median GPU time of each kernel family's forward
//! and backward at the shapes MobileFaceNet and MiniNetwork use.
//!
//! Time comes from timestamp queries written at the start and end of every
//! compute pass (one pass per dispatch), summed over the dispatches of one
//! repeat. Adapters without timestamp queries are timed by the CPU clock
//! around a whole submission and its completion, and the table says so.

use crate::gpu::{Gpu, Recorder};
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
}

const SLOTS: u32 = 64;

fn wait(gpu: &Gpu) {
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("waiting for the GPU");
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
    rec.encoder().resolve_query_set(set, 0..used, resolve, 0);
    rec.encoder().copy_buffer_to_buffer(resolve, 0, readback, 0, used as u64 * 8);
    rec.submit();
    readback.map_async(wgpu::MapMode::Read, .., |r| r.expect("mapping timestamps"));
    wait(gpu);
    let ticks: Vec<u64> = bytemuck::cast_slice(&readback.get_mapped_range(..)?.to_vec()[..used as usize * 8]).to_vec();
    readback.unmap();
    let total: u64 = ticks.chunks(2).map(|p| p[1].saturating_sub(p[0])).sum();
    Ok(total as f64 * gpu.queue.get_timestamp_period() as f64 * 1e-9)
}

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
        });
    }
    Ok(rows)
}

#[derive(Serialize, Debug)]
pub struct TrainThroughput {
    pub adapter: String,
    pub seconds_per_step: f64,
    pub images_per_second: f64,
}

/// Whole training steps (forward, loss, backward, SGD) on random inputs,
/// each submitted and waited for; median over `steps` after one warm-up.
pub fn train_throughput(
    gpu: &Gpu,
    spec: crate::models::ModelSpec,
    batch: usize,
    steps: usize,
) -> Result<TrainThroughput> {
    use crate::nn::{Backend, GpuBackend};
    let mut b = GpuBackend::new(gpu)?;
    let mut net = crate::models::Net::init(&mut b, spec, 0)?;
    let x: Vec<f32> =
        (0..batch * 3 * spec.input * spec.input).map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0).collect();
    let labels: Vec<u32> = (0..batch).map(|i| (i % spec.classes) as u32).collect();
    let h = crate::kernels::sgd::Sgd { lr: 1e-3, momentum: 0.9, weight_decay: 5e-4 };
    let mut times = Vec::new();
    for i in 0..=steps.max(1) {
        let xt = b.upload(&x, &[batch, 3, spec.input, spec.input])?;
        let lt = b.labels(&labels)?;
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

#[derive(Debug, Serialize)]
pub struct DetectTime {
    pub adapter: String,
    pub width: u32,
    pub height: u32,
    pub faces: usize,
    /// Median wall time of one `detect` call (pyramid, three networks, NMS).
    pub seconds: f64,
}

/// Wall time of MTCNN on a London photo at its size (300x300) and scaled up
/// to each of `sizes`, default settings; median over `repeats` after a warm-up.
pub fn detect_times(gpu: &Gpu, sizes: &[u32], repeats: usize) -> Result<Vec<DetectTime>> {
    let photo = crate::preprocess::open_rgb(&crate::data::bundled("london/001/neutral.jpg")?)?;
    let mut d = crate::detect::Detector::open(gpu, None, crate::detect::Options::default())?;
    let mut out = Vec::new();
    for &s in sizes {
        let img = if s == photo.width() {
            photo.clone()
        } else {
            image::imageops::resize(&photo, s, s, image::imageops::FilterType::Triangle)
        };
        let mut times = Vec::new();
        let mut faces = 0;
        for i in 0..=repeats.max(1) {
            let start = Instant::now();
            faces = d.detect(&img)?.len();
            if i > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        out.push(DetectTime {
            adapter: gpu.info.name.clone(),
            width: s,
            height: s,
            faces,
            seconds: times[times.len() / 2],
        });
    }
    Ok(out)
}
