//! `arcface bench kernels|train|detect` (also behind `cargo bench`).

use super::args::{GpuArgs, ModelArg, ModelArgs, PrecisionArg};
use super::output::json;
use crate::detect::bench::detect_times;
use crate::gpu::timing::{self, KernelTime};
use crate::gpu::Gpu;
use crate::io::checkpoint::CheckpointMeta;
use crate::io::model_file::{self, Model};
use crate::kernels::gradcheck;
use crate::models::{ModelSpec, Net};
use crate::nn::GpuBackend;
use crate::pipeline::bench::{profile_step, train_throughput};
use crate::recognize::bench::{infer_throughput, profile_call, profile_timer};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Wall time of face detection (MTCNN) on a photo at several sizes
    Detect(DetectBench),
    /// Training throughput (images/s) of a model: whole SGD steps on random data
    Train(TrainBench),
    /// Median GPU time, GFLOP/s and GB/s of each kernel at MobileFaceNet / MiniNetwork shapes
    Kernels(KernelBench),
    /// Inference throughput (images/s of embeddings) of a model or checkpoint
    Infer(InferBench),
    /// The training loader alone: images/s decoded and augmented (no GPU)
    Load(LoadBench),
}

impl BenchCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        match self {
            BenchCmd::Detect(b) => b.run(gpu),
            BenchCmd::Train(b) => b.run(gpu),
            BenchCmd::Kernels(b) => b.run(gpu),
            BenchCmd::Infer(b) => b.run(gpu),
            BenchCmd::Load(b) => b.run(),
        }
    }
}

#[derive(Args, Debug)]
pub struct DetectBench {
    /// Square photo sizes (a bundled 300x300 photo, scaled)
    #[arg(long, value_delimiter = ',', default_values_t = [300, 1350])]
    sizes: Vec<u32>,
    /// Timed runs after one warm-up
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl DetectBench {
    fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let rows = detect_times(&gpu.open()?, &self.sizes, self.repeats)?;
        if self.json {
            json(&rows)?;
        } else {
            for r in &rows {
                let stages: Vec<String> = r.stages.iter().map(|s| format!("{} {:.3}", s.stage, s.seconds)).collect();
                println!(
                    "{}x{}: {:.3} s per photo ({}), {} face(s) (median of {}, {})",
                    r.width,
                    r.height,
                    r.seconds,
                    stages.join(", "),
                    r.faces,
                    self.repeats,
                    r.adapter
                );
            }
        }
        Ok(true)
    }
}

/// `--profile` on an adapter without timestamp queries.
fn no_timestamps(gpu: &Gpu) -> anyhow::Error {
    anyhow::anyhow!("--profile needs timestamp queries, which adapter `{}` does not have", gpu.info.name)
}

/// One row of a profile by kernel.
fn print_kernel_time(r: &KernelTime) {
    println!("{:<48} {:>4} x {:>10.2} ms {:>5.1}%", r.kernel, r.dispatches, r.ms, r.share * 100.0);
}

#[derive(Args, Debug)]
pub struct TrainBench {
    /// Network to time
    #[arg(long, value_enum, default_value_t = ModelArg::Mobilefacenet)]
    model: ModelArg,
    #[command(flatten)]
    shape: ModelArgs,
    /// Images per training step
    #[arg(long = "batch-size", visible_alias = "batch", default_value_t = 32)]
    batch: usize,
    /// Number of people (classes) of the head
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Timed steps after one warm-up step
    #[arg(long, default_value_t = 2)]
    steps: usize,
    /// Instead: one step's GPU time by kernel, each dispatch timed alone
    #[arg(long)]
    profile: bool,
    /// Activations in f32, or f16 (mixed precision, as `train --precision`)
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl TrainBench {
    fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let spec = self.shape.spec(self.model, self.classes);
        if self.profile {
            return self.print_profile(&gpu.open()?, spec);
        }
        let r = train_throughput(&gpu.open()?, spec, self.batch, self.steps, self.precision.into())?;
        if self.json {
            json(&r)?;
        } else {
            println!(
                "{:?} {}x{} batch {}: {:.2} s per step, {:.2} images/s (mean of {} steps; the first step {:.2} s; {})",
                spec.arch,
                spec.input,
                spec.input,
                self.batch,
                r.seconds_per_step,
                r.images_per_second,
                self.steps,
                r.first_step_ms / 1e3,
                r.adapter
            );
        }
        Ok(true)
    }
}

impl TrainBench {
    fn print_profile(&self, gpu: &Gpu, spec: ModelSpec) -> Result<bool> {
        let rows = profile_step(gpu, spec, self.batch, self.precision.into())?;
        if rows.is_empty() {
            return Err(no_timestamps(gpu));
        }
        if self.json {
            return json(&rows).map(|_| true);
        }
        let total: f64 = rows.iter().map(|r| r.ms).sum();
        println!(
            "{:?} {}x{} batch {}, kernel set {}: {:.1} ms of dispatches",
            spec.arch,
            spec.input,
            spec.input,
            self.batch,
            gpu.kernels.name(),
            total
        );
        for r in &rows {
            print_kernel_time(r);
        }
        Ok(true)
    }
}

#[derive(Args, Debug)]
pub struct LoadBench {
    /// Dataset: a folder of per-person folders, or a RecordIO set (default:
    /// the bundled ORL faces)
    #[arg(long)]
    data: Option<PathBuf>,
    /// Input size the images are resized and augmented to
    #[arg(long, default_value_t = 112)]
    input: usize,
    /// Images per batch
    #[arg(long = "batch-size", visible_alias = "batch", default_value_t = 32)]
    batch: usize,
    /// Threads decoding (0: one per core)
    #[arg(long, default_value_t = 0)]
    loader_threads: usize,
    /// Passes over the dataset (the first reads the files from disk, later
    /// ones from the system's cache)
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl LoadBench {
    fn run(&self) -> Result<bool> {
        let root = match &self.data {
            Some(d) => d.clone(),
            None => crate::data::bundled("orl")?,
        };
        let data = crate::data::dataset::Dataset::scan(&root, false)?;
        let threads = crate::data::loader::threads(self.loader_threads);
        for epoch in 0..self.epochs.max(1) {
            let r = crate::data::loader::measure(&data.samples, self.input, self.batch, threads)?;
            if self.json {
                json(&r)?;
                continue;
            }
            println!(
                "epoch {}: {} images ({} failed) in {:.2} s: {:.0} images/s decoded and augmented to {}x{} on {} \
                 threads{}",
                epoch + 1,
                r.images,
                r.failed,
                r.seconds,
                r.images_per_s,
                r.size,
                r.size,
                r.threads,
                r.peak_rss_mb.map_or(String::new(), |m| format!(", peak memory {m:.0} MB"))
            );
        }
        Ok(true)
    }
}

#[derive(Args, Debug)]
pub struct KernelBench {
    /// Batch size of the shapes
    #[arg(long = "batch-size", visible_alias = "batch", default_value_t = 32)]
    batch: usize,
    /// Timed repeats after one warm-up run
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Only this kernel family
    #[arg(long, value_parser = super::args::kernel_family())]
    kernel: Option<String>,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl KernelBench {
    fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let families = gradcheck::select(self.kernel.as_deref())?;
        let gpu = gpu.open()?;
        if !self.json {
            let r = gpu.report();
            println!("{} ({}), kernel set {} (chosen by {})", r.name, r.backend, r.kernels.name(), r.kernels_chosen_by);
        }
        let mut rows = Vec::new();
        for f in families {
            let cases = (f.bench)(&gpu, self.batch)?;
            let got = timing::run(&gpu, &cases, self.repeats)?;
            if !self.json {
                for r in &got {
                    println!(
                        "{:<24} {:<18} {:<36} {:>10.3} ms {:>8.2} GFLOP/s {:>8.2} GB/s {:>9} inv x {:>6} serial",
                        r.kernel,
                        r.direction,
                        r.shape,
                        r.median_ms,
                        r.gflops,
                        r.gbps,
                        r.invocations,
                        r.serial_iterations
                    );
                }
            }
            rows.extend(got);
        }
        if self.json {
            let out = serde_json::json!({ "adapter": gpu.report(), "batch": self.batch, "repeats": self.repeats, "rows": rows });
            json(&out)?;
        }
        Ok(true)
    }
}

/// Dispatches `bench infer --profile` lists one by one.
const SLOWEST_SHOWN: usize = 20;

#[derive(Args, Debug)]
pub struct InferBench {
    /// A fresh model of this architecture (ignored with --checkpoint)
    #[arg(long, value_enum, default_value_t = ModelArg::Mobilefacenet)]
    model: ModelArg,
    #[command(flatten)]
    shape: ModelArgs,
    /// Or a checkpoint (trained here or imported)
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Images per call
    #[arg(long = "batch-size", visible_alias = "batch", default_value_t = 32)]
    batch: usize,
    /// Timed calls after the warm-up
    #[arg(long, default_value_t = 5)]
    calls: usize,
    /// Instead: one call's GPU time by kernel and its slowest dispatches, each dispatch timed alone
    #[arg(long)]
    profile: bool,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl InferBench {
    fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let timer = if self.profile {
            let Some(t) = profile_timer(&gpu) else {
                return Err(no_timestamps(&gpu));
            };
            Some(t)
        } else {
            None
        };
        let mut b = GpuBackend::new(&gpu)?;
        let model = match &self.checkpoint {
            Some(path) => model_file::open(path, &mut b)?,
            None => {
                let spec = self.shape.spec(self.model, 10);
                let net = Net::init(&mut b, spec, 0)?;
                Model::Trained(net, CheckpointMeta::new(spec, (0..10).map(|i| i.to_string()).collect()))
            }
        };
        let mut model = model.for_inference(&mut b)?;
        if let Some(timer) = &timer {
            let p = profile_call(&gpu, timer, &mut b, &mut model, self.batch)?;
            if self.json {
                return json(&p).map(|_| true);
            }
            let total: f64 = p.by_kernel.iter().map(|r| r.ms).sum();
            println!("batch {}, kernel set {}: {:.1} ms of dispatches", self.batch, gpu.kernels.name(), total);
            for r in &p.by_kernel {
                print_kernel_time(r);
            }
            let mut slowest: Vec<_> = p.dispatches.iter().enumerate().collect();
            slowest.sort_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
            println!("slowest dispatches (position in the call, kernel, invocations):");
            for (i, d) in slowest.iter().take(SLOWEST_SHOWN) {
                println!("{:>4} {:<40} {:>9} inv {:>10.2} ms", i, d.kernel, d.invocations, d.ms);
            }
            return Ok(true);
        }
        let r = infer_throughput(&gpu, &mut b, &mut model, self.batch, self.calls)?;
        if self.json {
            json(&r)?;
        } else {
            println!(
                "{} batch {}: {:.1} ms per call (p99 {:.1} ms), {:.2} images/s; {} dispatches, {} buffers created per \
                 call; the first call {:.1} ms, {:.1} MB allocated; {}",
                r.model,
                r.batch,
                r.call_ms,
                r.p99_ms,
                r.images_per_s,
                r.per_call.dispatches,
                r.per_call.buffers_created,
                r.first_call_ms,
                r.first_call_bytes as f64 / 1e6,
                r.adapter
            );
        }
        Ok(true)
    }
}
