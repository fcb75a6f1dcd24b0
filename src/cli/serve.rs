//! `arcface serve` and `arcface import`.

use super::args::GpuArgs;
use crate::io::{model_file, onnx_export, onnx_import};
use crate::serve;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ServeCmd {
    /// A model to offer, as NAME=CHECKPOINT (repeat for several)
    #[arg(long = "model", required = true, value_parser = parse_model)]
    models: Vec<(String, PathBuf)>,
    /// Gallery (from `arcface enroll`) for models that give embeddings only
    #[arg(long)]
    gallery: Option<PathBuf>,
    /// Address and port to listen on
    #[arg(long, default_value = "127.0.0.1:7860", env = "ARCFACE_BIND")]
    bind: String,
    /// Largest upload, in MB
    #[arg(long, default_value_t = 10.0)]
    max_upload_mb: f64,
    /// Connections open at once; each one past it is answered 503
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds a client has to send a request's headers (also how long an
    /// idle keep-alive connection stays open)
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    header_timeout: f64,
    /// Seconds a client has to send an upload once its headers are in (408
    /// beyond)
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    body_timeout: f64,
    /// Requests one client address may have in progress at once (429
    /// beyond); the GPU takes clients' photos in turn
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    max_per_client: u32,
    /// Use the whole photo instead of detecting and aligning the face
    #[arg(long)]
    no_detect: bool,
    /// Compare tab: same person at or above this cosine similarity
    #[arg(long, default_value_t = 0.5)]
    verify_threshold: f64,
    /// Photos waiting for the same model that are answered in one pass of
    /// the model, at most (each photo's face is still found on its own; 1:
    /// one photo at a time). A lone photo never waits for others
    #[arg(long, default_value_t = serve::worker::MAX_BATCH as u32, value_parser = clap::value_parser!(u32).range(1..=256))]
    max_batch: u32,
}

fn seconds(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!("`{s}`: expected seconds, more than 0 and at most 3600")),
    }
}

fn parse_model(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok((name.to_string(), PathBuf::from(path))),
        _ => Err(format!("`{s}`: expected NAME=CHECKPOINT")),
    }
}

impl ServeCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let opt = serve::Options {
            bind: self.bind.clone(),
            limits: serve::Limits {
                max_upload: (self.max_upload_mb * 1e6) as usize,
                max_connections: self.max_connections as usize,
                header_timeout: std::time::Duration::from_secs_f64(self.header_timeout),
                body_timeout: std::time::Duration::from_secs_f64(self.body_timeout),
                max_per_client: self.max_per_client as usize,
                ..serve::Limits::default()
            },
            worker: serve::worker::Config {
                models: self.models.clone(),
                gallery: self.gallery.clone(),
                detect: !self.no_detect,
                verify_threshold: self.verify_threshold,
                gpu: gpu.options(),
                max_batch: self.max_batch as usize,
            },
        };
        let h = serve::start(opt)?;
        for m in &h.models {
            eprintln!("model {} ({}, {} people)", m.name, m.kind, m.people.len());
        }
        println!("serving on http://{}", h.addr);
        // SIGINT / SIGTERM: stop taking connections, answer the requests in
        // flight (up to DRAIN), exit 0.
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGINT, SIGTERM};
            let stopper = h.stopper();
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    eprintln!("signal {sig}: finishing the requests in flight, then stopping");
                    stopper.stop();
                }
            });
        }
        const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);
        if !h.wait(DRAIN) {
            eprintln!("stopped with requests still unanswered after {} s", DRAIN.as_secs());
        }
        Ok(true)
    }
}

#[derive(Args, Debug)]
pub struct ImportCmd {
    /// The ONNX file
    model: PathBuf,
    /// Checkpoint to write
    #[arg(long)]
    out: PathBuf,
    /// Input height = width the network takes
    #[arg(long, default_value_t = 112)]
    input: usize,
    /// Per-channel mean the network was trained with, as R,G,B in units of
    /// 0..1 pixel values (insightface's arcface_torch: 0.5,0.5,0.5; default:
    /// ImageNet's)
    #[arg(long, value_parser = rgb, default_value = "0.485,0.456,0.406")]
    mean: [f32; 3],
    /// Per-channel standard deviation, as R,G,B (arcface_torch: 0.5,0.5,0.5;
    /// default: ImageNet's)
    #[arg(long, value_parser = rgb, default_value = "0.229,0.224,0.225")]
    std: [f32; 3],
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

/// `R,G,B`: three numbers.
fn rgb(s: &str) -> std::result::Result<[f32; 3], String> {
    super::args::three_numbers(s, "R,G,B", "0.5,0.5,0.5")
}

impl ImportCmd {
    pub fn run(&self) -> Result<bool> {
        if self.std.iter().any(|&s| !(s > 0.0)) {
            anyhow::bail!("--std {:?}: every channel's standard deviation must be above 0", self.std);
        }
        let (mut def, weights) = onnx_import::from_onnx(&self.model, self.input)?;
        // How its photos were normalised in training: recorded with it.
        def.normalization = crate::data::input::Normalization { mean: self.mean, std: self.std };
        model_file::save_graph(&self.out, &def, &weights)?;
        let params: usize = weights.values().map(|t| t.values.len()).sum();
        if self.json {
            let r = serde_json::json!({ "checkpoint": self.out, "layers": def.ops.len(), "parameters": params });
            super::output::json(&r)?;
            return Ok(true);
        }
        println!(
            "{} layers, {params} parameters from {} -> {}",
            def.ops.len(),
            self.model.display(),
            self.out.display()
        );
        Ok(true)
    }
}

#[derive(Args, Debug)]
pub struct ExportCmd {
    /// Model to export: any checkpoint (trained here, or imported and
    /// fine-tuned) or imported network
    checkpoint: PathBuf,
    /// ONNX file to write
    #[arg(long)]
    onnx: PathBuf,
    /// A model with an ArcFace head: also the classifier output `logits`
    /// (what `predict` ranks by) beside `embedding`
    #[arg(long)]
    head: bool,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl ExportCmd {
    pub fn run(&self) -> Result<bool> {
        let r = onnx_export::export(&self.checkpoint, &self.onnx, self.head)?;
        if self.json {
            super::output::json(
                &serde_json::json!({ "onnx": self.onnx, "nodes": r.nodes, "parameters": r.parameters, "outputs": r.outputs }),
            )?;
        } else {
            println!(
                "{} -> {} ({} nodes, {} parameters; outputs {}; opset 13, batch dimension dynamic)",
                self.checkpoint.display(),
                self.onnx.display(),
                r.nodes,
                r.parameters,
                r.outputs.join(", ")
            );
        }
        Ok(true)
    }
}
