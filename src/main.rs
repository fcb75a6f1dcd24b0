//! The `arcface` command line.

use anyhow::Result;
use arcface::gpu::{Gpu, GpuOptions};
use arcface::infer::{FileResult, Session};
use arcface::models::{Arch, Head, ModelSpec, DEFAULT_ARCFACE};
use arcface::train::{self, TrainConfig};
use arcface::{bench, gradcheck};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "arcface",
    version,
    about = "Train and run face-recognition networks on any Vulkan, Metal or DX12 GPU"
)]
struct Cli {
    /// GPU backend: vulkan, metal or dx12 (default: all; env ARCFACE_BACKEND)
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Use the adapter whose name contains this text (env ARCFACE_ADAPTER)
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the GPU adapter that was chosen, its backend, driver and limits;
    /// with --model, a model's layer table, parameter count and multiply-adds
    Info {
        #[arg(long)]
        json: bool,
        /// Describe this model instead of the adapter
        #[arg(long, value_enum)]
        model: Option<ModelArg>,
        /// Number of people (classes) for --model
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// Input size for --model mininet (MobileFaceNet takes 112)
        #[arg(long, default_value_t = 112)]
        input: usize,
        /// Head for --model mobilefacenet
        #[arg(long, value_enum, default_value_t = HeadArg::Arcface)]
        head: HeadArg,
    },
    /// L2-normalised face embeddings of images, with a checkpoint
    Embed {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[command(flatten)]
        emb: EmbedArgs,
        #[arg(long)]
        json: bool,
    },
    /// Who is in each image: the most probable people, with a checkpoint
    Predict {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// How many people to list per image
        #[arg(long, default_value_t = 5)]
        top: usize,
        #[command(flatten)]
        align: AlignArgs,
        #[arg(long)]
        json: bool,
    },
    /// Whole photos in per-person folders to aligned 112x112 face crops
    /// (MTCNN + alignment), in the same folders, with labels.csv and a report
    Prepare {
        /// Folder of per-person folders of photos
        raw: PathBuf,
        /// Where the crops go
        out: PathBuf,
        #[command(flatten)]
        det: DetectArgs,
        /// No progress bar
        #[arg(long)]
        quiet: bool,
    },
    /// Import an ONNX face-embedding network (a MobileFaceNet-family model) as a checkpoint
    Import {
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Input height = width the network takes
        #[arg(long, default_value_t = 112)]
        input: usize,
    },
    /// Are two photos the same person? Cosine similarity of their embeddings
    Verify {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        checkpoint: PathBuf,
        /// Same person at or above this similarity
        #[arg(long, default_value_t = 0.5)]
        threshold: f64,
        #[command(flatten)]
        emb: EmbedArgs,
        #[arg(long)]
        json: bool,
    },
    /// Verification accuracy (10-fold), ROC AUC, EER and TAR at FAR 1e-2 / 1e-3 on pairs
    EvalPairs {
        #[arg(long)]
        checkpoint: PathBuf,
        /// CSV of `a,b,same` (paths relative to the CSV)
        #[arg(long, conflicts_with = "data", required_unless_present = "data")]
        pairs: Option<PathBuf>,
        /// Or every pair of photos of a per-person folder
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write the ROC curve
        #[arg(long, default_value = "roc.png")]
        roc: PathBuf,
        #[command(flatten)]
        emb: EmbedArgs,
        #[arg(long)]
        json: bool,
    },
    /// Store each person's mean embedding (photos in one folder per person) in a gallery
    Enroll {
        gallery_dir: PathBuf,
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        emb: EmbedArgs,
    },
    /// Who is in each photo, among the gallery's people, or "unknown"
    Identify {
        #[arg(required = true)]
        photos: Vec<PathBuf>,
        #[arg(long)]
        gallery: PathBuf,
        #[arg(long)]
        checkpoint: PathBuf,
        /// How many people to list per photo
        #[arg(long, default_value_t = 3)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// The web page and JSON API: upload a photo, pick a model, see who it is
    Serve {
        /// A model to offer, as NAME=CHECKPOINT (repeat for several)
        #[arg(long = "model", required = true, value_parser = parse_model)]
        models: Vec<(String, PathBuf)>,
        /// Gallery (from `arcface enroll`) for models that give embeddings only
        #[arg(long)]
        gallery: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:7860")]
        bind: String,
        /// Largest upload, in MB
        #[arg(long, default_value_t = 10.0)]
        max_upload_mb: f64,
        /// Use the whole photo instead of detecting and aligning the face
        #[arg(long)]
        no_detect: bool,
        /// Compare tab: same person at or above this similarity
        #[arg(long, default_value_t = 0.5)]
        verify_threshold: f64,
    },
    /// Faces in photos (MTCNN): boxes, probabilities and five landmarks
    Detect {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[command(flatten)]
        det: DetectArgs,
        /// Write each photo with its boxes and landmarks drawn into this folder
        #[arg(long)]
        draw: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Check every kernel, forward and backward, on the GPU against its CPU reference
    Gradcheck {
        /// Only this kernel family (conv2d, depthwise, batchnorm, activation, maxpool,
        /// linear, residual, l2norm, arcface, softmax_xent, sgd)
        #[arg(long)]
        kernel: Option<String>,
        /// Seed of the random inputs and shapes
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// Train a model on a folder with one sub-folder of photos per person
    Train {
        #[command(flatten)]
        opts: TrainArgs,
        /// Learning rate
        #[arg(long, default_value_t = 0.1)]
        lr: f32,
        /// SGD momentum
        #[arg(long, default_value_t = 0.9)]
        momentum: f32,
        /// Run folder: checkpoints, metrics, curves, the split
        #[arg(long)]
        out: PathBuf,
        /// Continue the run in --out from its last completed epoch
        #[arg(long)]
        resume: bool,
    },
    /// Train every (learning rate, momentum) pair; keep the lowest validation loss
    Sweep {
        #[command(flatten)]
        opts: TrainArgs,
        #[arg(long, value_delimiter = ',', default_value = "1e-5,1e-4,1e-3,1e-2")]
        lrs: Vec<f32>,
        #[arg(long, value_delimiter = ',', default_value = "0.9,0.95,0.99")]
        momentums: Vec<f32>,
        /// Folder for one run per pair, the table and the best model
        #[arg(long)]
        out: PathBuf,
    },
    /// Evaluate a checkpoint on the test split saved with its run
    Eval {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Look the test images up in this folder (person/file) instead
        #[arg(long)]
        data: Option<PathBuf>,
        /// Diagnostic: batch norm with the test set's own statistics instead
        /// of the running ones (tells lagging running statistics from a bad model)
        #[arg(long)]
        batch_stats: bool,
        #[arg(long)]
        json: bool,
    },
    /// The whole pipeline on the bundled ORL faces: split, train, evaluate
    Demo {
        /// Run folder
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
    },
    /// Benchmarks
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Args, Clone)]
struct TrainArgs {
    /// Dataset folder: one sub-folder of images per person
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value_t = ModelArg::Mobilefacenet)]
    model: ModelArg,
    /// MobileFaceNet's head
    #[arg(long, value_enum, default_value_t = HeadArg::Arcface)]
    head: HeadArg,
    /// ArcFace scale
    #[arg(long, default_value_t = 32.0)]
    s: f64,
    /// ArcFace additive angular margin (radians)
    #[arg(long, default_value_t = 0.5)]
    m: f64,
    /// Input size (MiniNetwork; MobileFaceNet takes 112)
    #[arg(long, default_value_t = 112)]
    input: usize,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f32,
    /// Halve (see --lr-gamma) the learning rate every N epochs
    #[arg(long, default_value_t = 3)]
    lr_step: usize,
    #[arg(long, default_value_t = 0.5)]
    lr_gamma: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only the first N people (in name order); 0 = all
    #[arg(long, default_value_t = 0)]
    people: usize,
    /// After each epoch, re-estimate the batch-norm running statistics over
    /// the training images with the epoch's weights ("precise BN"; costs
    /// about 50 forward batches per epoch); for runs of few steps per epoch
    #[arg(long)]
    recalibrate_bn: bool,
    /// Start from this checkpoint's backbone (`arcface import`ed, or a
    /// MobileFaceNet trained here) with a fresh ArcFace head for the people
    #[arg(long)]
    init: Option<PathBuf>,
    /// With --init: train only the new head for the first N epochs
    #[arg(long, default_value_t = 0)]
    freeze_backbone_epochs: usize,
    /// The photos are whole photos: detect and align the faces first (as
    /// `arcface prepare`, into RUN/aligned), then train on the crops
    #[arg(long)]
    align: bool,
    #[command(flatten)]
    det: DetectArgs,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    fn config(&self, lr: f32, momentum: f32) -> TrainConfig {
        let model = match self.model {
            ModelArg::Mobilefacenet => ModelSpec {
                arch: Arch::MobileFaceNet,
                input: 112,
                classes: 0,
                head: match self.head {
                    HeadArg::Arcface => Head::ArcFace { s: self.s, m: self.m },
                    HeadArg::Softmax => Head::Softmax,
                },
            },
            ModelArg::Mininet => ModelSpec { arch: Arch::MiniNet, input: self.input, classes: 0, head: Head::Softmax },
        };
        TrainConfig {
            model,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr,
            momentum,
            weight_decay: self.weight_decay,
            lr_step: self.lr_step,
            lr_gamma: self.lr_gamma,
            seed: self.seed,
            max_people: self.people,
            recalibrate_bn: self.recalibrate_bn,
            align: self.align,
            init: self.init.clone(),
            freeze_backbone_epochs: self.freeze_backbone_epochs,
        }
    }
}

/// How photos become embeddings.
#[derive(Args, Clone)]
struct EmbedArgs {
    #[command(flatten)]
    align: AlignArgs,
    /// Do not add the mirrored image's embedding
    #[arg(long)]
    no_flip: bool,
}

/// Detection and alignment of whole photos before a model sees them.
#[derive(Args, Clone)]
struct AlignArgs {
    /// Detect the face (MTCNN; the largest if several) and align it to the
    /// 112x112 template first; on by default for checkpoints trained with --align
    #[arg(long)]
    align: bool,
    #[command(flatten)]
    det: DetectArgs,
}

/// MTCNN settings, shared by detect, prepare and --align.
#[derive(Args, Clone)]
struct DetectArgs {
    /// Smallest face to find, in pixels
    #[arg(long, default_value_t = 20.0)]
    min_face: f64,
    /// Scale factor between pyramid levels
    #[arg(long, default_value_t = 0.709)]
    factor: f64,
    /// Face-probability thresholds of P-Net, R-Net and O-Net
    #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [0.6, 0.7, 0.7])]
    thresholds: Vec<f32>,
    /// MTCNN weights (default: data/mtcnn/mtcnn.safetensors or $ARCFACE_MTCNN)
    #[arg(long)]
    mtcnn: Option<PathBuf>,
}

impl DetectArgs {
    fn options(&self) -> arcface::detect::Options {
        let t = &self.thresholds;
        arcface::detect::Options { min_face: self.min_face, factor: self.factor, thresholds: [t[0], t[1], t[2]] }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelArg {
    Mobilefacenet,
    Mininet,
}

#[derive(Clone, Copy, ValueEnum)]
enum HeadArg {
    Arcface,
    Softmax,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Wall time of face detection (MTCNN) on a photo at several sizes
    Detect {
        /// Square photo sizes (a bundled 300x300 photo, scaled)
        #[arg(long, value_delimiter = ',', default_values_t = [300, 1350])]
        sizes: Vec<u32>,
        /// Timed runs after one warm-up
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[arg(long)]
        json: bool,
    },
    /// Training throughput (images/s) of a model: whole SGD steps on random data
    Train {
        #[arg(long, value_enum, default_value_t = ModelArg::Mobilefacenet)]
        model: ModelArg,
        /// Input size for MiniNetwork
        #[arg(long, default_value_t = 112)]
        input: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// Timed steps after one warm-up step
        #[arg(long, default_value_t = 2)]
        steps: usize,
        #[arg(long)]
        json: bool,
    },
    /// Median GPU time, GFLOP/s and GB/s of each kernel at MobileFaceNet / MiniNetwork shapes
    Kernels {
        /// Batch size of the shapes
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Timed repeats after one warm-up run
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Only this kernel family
        #[arg(long)]
        kernel: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_model(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok((name.to_string(), PathBuf::from(path))),
        _ => Err(format!("`{s}`: expected NAME=CHECKPOINT")),
    }
}

fn gpu(cli: &Cli) -> Result<Gpu> {
    let env = GpuOptions::from_env();
    Gpu::with_options(&GpuOptions {
        backend: cli.backend.clone().or(env.backend),
        adapter: cli.adapter.clone().or(env.adapter),
    })
}

/// An inference session, aligning faces first when asked or when the
/// checkpoint was trained on aligned crops.
fn session<'g>(gpu: &'g Gpu, checkpoint: &std::path::Path, a: &AlignArgs) -> Result<Session<'g>> {
    let mut s = Session::open(gpu, checkpoint)?;
    if a.align || s.trained_on_aligned_faces() {
        s.align = Some(arcface::detect::Detector::open(gpu, a.det.mtcnn.as_deref(), a.det.options())?);
    }
    Ok(s)
}

/// A session for embeddings: alignment and flip as asked.
fn embed_session<'g>(gpu: &'g Gpu, checkpoint: &std::path::Path, e: &EmbedArgs) -> Result<Session<'g>> {
    let mut s = session(gpu, checkpoint, &e.align)?;
    s.flip = !e.no_flip;
    Ok(s)
}

/// `train --align`: the photos detected and aligned into RUN/aligned (kept
/// on --resume, so the photos are not detected again).
fn aligned_data(gpu: &Gpu, opts: &TrainArgs, out: &std::path::Path, resume: bool) -> Result<PathBuf> {
    let aligned = out.join("aligned");
    if !(resume && aligned.join("labels.csv").is_file()) {
        let mut d = arcface::detect::Detector::open(gpu, opts.det.mtcnn.as_deref(), opts.det.options())?;
        let r = arcface::prepare::run(&mut d, &opts.data, &aligned, opts.quiet)?;
        for p in &r.no_face {
            eprintln!("no face found, skipped: {}", p.display());
        }
        eprintln!("{} of {} photos aligned into {}", r.written, r.photos, aligned.display());
    }
    Ok(aligned)
}

fn run(cli: &Cli) -> Result<bool> {
    match &cli.command {
        Command::Info { json, model: Some(m), classes, input, head } => {
            let spec = match m {
                ModelArg::Mobilefacenet => ModelSpec {
                    arch: Arch::MobileFaceNet,
                    input: 112,
                    classes: *classes,
                    head: match head {
                        HeadArg::Arcface => DEFAULT_ARCFACE,
                        HeadArg::Softmax => Head::Softmax,
                    },
                },
                ModelArg::Mininet => {
                    ModelSpec { arch: Arch::MiniNet, input: *input, classes: *classes, head: Head::Softmax }
                }
            };
            spec.validate()?;
            print_model(&spec, *json)?;
            Ok(true)
        }
        Command::Serve { models, gallery, bind, max_upload_mb, no_detect, verify_threshold } => {
            let env = GpuOptions::from_env();
            let opt = arcface::serve::Options {
                bind: bind.clone(),
                max_upload: (*max_upload_mb * 1e6) as usize,
                worker: arcface::serve::worker::Config {
                    models: models.clone(),
                    gallery: gallery.clone(),
                    detect: !*no_detect,
                    verify_threshold: *verify_threshold,
                    gpu: GpuOptions {
                        backend: cli.backend.clone().or(env.backend),
                        adapter: cli.adapter.clone().or(env.adapter),
                    },
                },
            };
            let h = arcface::serve::start(opt)?;
            for m in &h.models {
                eprintln!("model {} ({}, {} people)", m.name, m.kind, m.people.len());
            }
            println!("serving on http://{}", h.addr);
            h.wait();
            Ok(true)
        }
        Command::Import { model, out, input } => {
            let (def, weights) = arcface::graph::from_onnx(model, *input)?;
            arcface::graph::save(out, &def, &weights)?;
            let params: usize = weights.values().map(|t| t.values.len()).sum();
            println!("{} layers, {params} parameters from {} -> {}", def.ops.len(), model.display(), out.display());
            Ok(true)
        }
        Command::Verify { a, b, checkpoint, threshold, emb, json } => {
            let gpu = gpu(cli)?;
            let mut s = embed_session(&gpu, checkpoint, emb)?;
            let r = s.embed(&[a.clone(), b.clone()])?;
            for x in &r {
                if let Some(e) = &x.error {
                    anyhow::bail!("{e}");
                }
            }
            let sim = arcface::gallery::dot(r[0].result.as_ref().unwrap(), r[1].result.as_ref().unwrap());
            let same = sim >= *threshold;
            if *json {
                println!("{}", serde_json::json!({"similarity": sim, "threshold": threshold, "same": same}));
            } else {
                println!(
                    "similarity {sim:.4}: {} (threshold {threshold})",
                    if same { "same person" } else { "different people" }
                );
            }
            Ok(true)
        }
        Command::EvalPairs { checkpoint, pairs, data, roc, emb, json } => {
            let gpu = gpu(cli)?;
            let mut s = embed_session(&gpu, checkpoint, emb)?;
            let list = match (pairs, data) {
                (Some(p), _) => arcface::verify::read_pairs(p)?,
                (None, Some(d)) => arcface::verify::all_pairs(&arcface::data::dataset::Dataset::scan(d, false)?),
                (None, None) => unreachable!("clap requires one"),
            };
            let (scored, failed) = arcface::verify::score_pairs(&mut s, &list)?;
            for (p, e) in &failed {
                eprintln!("left out (pairs with {}): {e}", p.display());
            }
            let m = arcface::verify::metrics(&scored);
            arcface::verify::roc_png(&scored).save(roc)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!("{} pairs ({} same, {} different)", m.pairs, m.same, m.different);
                println!("accuracy {:.4} +- {:.4} ({} folds)", m.accuracy, m.accuracy_std, m.folds);
                println!("ROC AUC {:.4}", m.auc);
                println!("EER {:.4} (threshold {:.4})", m.eer, m.eer_threshold);
                println!("TAR at FAR 1e-2: {:.4}", m.tar_at_far_1e2);
                println!("TAR at FAR 1e-3: {:.4}", m.tar_at_far_1e3);
                println!("ROC curve: {}", roc.display());
            }
            Ok(failed.is_empty())
        }
        Command::Enroll { gallery_dir, checkpoint, out, emb } => {
            let gpu = gpu(cli)?;
            let mut s = embed_session(&gpu, checkpoint, emb)?;
            let (g, failed) = arcface::gallery::Gallery::enroll(&mut s, gallery_dir, checkpoint)?;
            for (p, e) in &failed {
                eprintln!("not enrolled: {} ({e})", p.display());
            }
            g.save(out)?;
            println!(
                "{} people ({} photos) enrolled in {}; identify threshold {:.4}",
                g.meta.people.len(),
                g.meta.counts.iter().sum::<usize>(),
                out.display(),
                g.meta.threshold
            );
            Ok(true)
        }
        Command::Identify { photos, gallery, checkpoint, top, json } => {
            let gpu = gpu(cli)?;
            let g = arcface::gallery::Gallery::load(gallery)?;
            let mut s = Session::open(&gpu, checkpoint)?;
            s.flip = g.meta.flip;
            if g.meta.align {
                s.align = Some(arcface::detect::Detector::open(&gpu, None, arcface::detect::Options::default())?);
            }
            let results: Vec<FileResult<arcface::gallery::Identity>> = s
                .embed(photos)?
                .into_iter()
                .map(|r| FileResult { path: r.path, result: r.result.map(|e| g.identify(&e, *top)), error: r.error })
                .collect();
            report(&results, *json, |id| {
                let list: Vec<String> = id.top.iter().map(|m| format!("{} {:.3}", m.person, m.score)).collect();
                format!("{} ({})", id.answer, list.join(", "))
            })
        }
        Command::Prepare { raw, out, det, quiet } => {
            let gpu = gpu(cli)?;
            let mut d = arcface::detect::Detector::open(&gpu, det.mtcnn.as_deref(), det.options())?;
            let r = arcface::prepare::run(&mut d, raw, out, *quiet)?;
            for (p, why) in &r.unreadable {
                eprintln!("skipped {}: {why}", p.display());
            }
            for p in &r.no_face {
                eprintln!("no face found, skipped: {}", p.display());
            }
            for (p, n) in &r.several_faces {
                eprintln!("{n} faces, the largest kept: {}", p.display());
            }
            println!(
                "{} of {} photos aligned into {} ({} without a face, {} with several) in {:.1} s; \
                 labels.csv and prepare_report.json there",
                r.written,
                r.photos,
                out.display(),
                r.no_face.len(),
                r.several_faces.len(),
                r.seconds
            );
            Ok(true)
        }
        Command::Embed { checkpoint, images, emb, json } => {
            let gpu = gpu(cli)?;
            let results = embed_session(&gpu, checkpoint, emb)?.embed(images)?;
            report(&results, *json, |e| {
                format!("[{}]", e.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(", "))
            })
        }
        Command::Detect { images, det, draw, json } => {
            let gpu = gpu(cli)?;
            let mut d = arcface::detect::Detector::open(&gpu, det.mtcnn.as_deref(), det.options())?;
            let results = d.detect_files(images, draw.as_deref())?;
            report(&results, *json, |faces| {
                let mut s = format!("{} face(s)", faces.len());
                for f in faces {
                    let b = f.bbox;
                    s += &format!(
                        "\n  box [{:.1}, {:.1}, {:.1}, {:.1}] p {:.4} eyes ({:.1}, {:.1}) ({:.1}, {:.1})",
                        b[0],
                        b[1],
                        b[2],
                        b[3],
                        f.prob,
                        f.landmarks[0][0],
                        f.landmarks[0][1],
                        f.landmarks[1][0],
                        f.landmarks[1][1]
                    );
                }
                s
            })
        }
        Command::Predict { checkpoint, images, top, align, json } => {
            let gpu = gpu(cli)?;
            let results = session(&gpu, checkpoint, align)?.predict(images, *top)?;
            report(&results, *json, |p| {
                p.iter().map(|p| format!("{} {:.3}", p.person, p.probability)).collect::<Vec<_>>().join(", ")
            })
        }
        Command::Train { opts, lr, momentum, out, resume } => {
            let gpu = gpu(cli)?;
            let data = if opts.align { aligned_data(&gpu, opts, out, *resume)? } else { opts.data.clone() };
            let o = train::run(&gpu, &data, out, opts.config(*lr, *momentum), *resume, opts.quiet)?;
            println!(
                "best epoch {} (validation loss {:.4}); checkpoints, metrics.csv and curves.png in {}",
                o.best_epoch,
                o.best_val_loss,
                o.out.display()
            );
            Ok(o.diverged.is_none())
        }
        Command::Sweep { opts, lrs, momentums, out } => {
            let gpu = gpu(cli)?;
            let rows = arcface::sweep::run(&gpu, &opts.data, out, &opts.config(0.0, 0.0), lrs, momentums, opts.quiet)?;
            arcface::sweep::print(&rows);
            Ok(rows.iter().any(|r| !r.diverged))
        }
        Command::Eval { checkpoint, data, batch_stats, json } => {
            let gpu = gpu(cli)?;
            let r = arcface::evaluate::run(&gpu, checkpoint, data.as_deref(), *batch_stats)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                arcface::evaluate::print(&r);
            }
            Ok(true)
        }
        Command::Demo { out } => {
            let gpu = gpu(cli)?;
            arcface::demo::run(&gpu, out)?;
            Ok(true)
        }
        Command::Info { json, .. } => {
            let r = gpu(cli)?.report();
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("adapter        {}", r.name);
                println!("backend        {}", r.backend);
                println!(
                    "device type    {}{}",
                    r.device_type,
                    if r.software { " (software rasteriser: expect CPU speed)" } else { "" }
                );
                println!("driver         {} {}", r.driver, r.driver_info);
                println!(
                    "timestamps     {}",
                    if r.timestamp_query { "yes (GPU-timed benchmarks)" } else { "no (benchmarks use the CPU clock)" }
                );
                println!("max buffer     {:.0} MiB", r.max_buffer_size as f64 / 1048576.0);
                println!("max binding    {:.0} MiB (storage)", r.max_storage_buffer_binding_size as f64 / 1048576.0);
                println!("storage bufs   {} per stage", r.max_storage_buffers_per_shader_stage);
                println!(
                    "workgroups     {} per dimension, {} invocations each",
                    r.max_compute_workgroups_per_dimension, r.max_compute_invocations_per_workgroup
                );
                println!("shared memory  {} KiB per workgroup", r.max_compute_workgroup_storage_size / 1024);
            }
            Ok(true)
        }
        Command::Gradcheck { kernel, seed, json } => {
            let families = gradcheck::select(kernel.as_deref())?;
            let gpu = gpu(cli)?;
            if !json {
                let r = gpu.report();
                println!("gradcheck on {} ({}, {}), seed {seed}\n", r.name, r.backend, r.device_type);
            }
            let rows = gradcheck::run(&gpu, &families, *seed)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                gradcheck::print_table(&rows);
            }
            Ok(rows.iter().all(|r| r.pass))
        }
        Command::Bench { what: BenchWhat::Detect { sizes, repeats, json } } => {
            let gpu = gpu(cli)?;
            let rows = bench::detect_times(&gpu, sizes, *repeats)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in &rows {
                    println!(
                        "{}x{}: {:.3} s per photo, {} face(s) (median of {repeats}, {})",
                        r.width, r.height, r.seconds, r.faces, r.adapter
                    );
                }
            }
            Ok(true)
        }
        Command::Bench { what: BenchWhat::Train { model, input, batch, classes, steps, json } } => {
            let spec = match model {
                ModelArg::Mobilefacenet => {
                    ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: *classes, head: DEFAULT_ARCFACE }
                }
                ModelArg::Mininet => {
                    ModelSpec { arch: Arch::MiniNet, input: *input, classes: *classes, head: Head::Softmax }
                }
            };
            let gpu = gpu(cli)?;
            let r = bench::train_throughput(&gpu, spec, *batch, *steps)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{:?} {}x{} batch {}: {:.2} s per step, {:.2} images/s (median of {} steps, {})",
                    spec.arch, spec.input, spec.input, batch, r.seconds_per_step, r.images_per_second, steps, r.adapter
                );
            }
            Ok(true)
        }
        Command::Bench { what: BenchWhat::Kernels { batch, repeats, kernel, json } } => {
            let families = gradcheck::select(kernel.as_deref())?;
            let gpu = gpu(cli)?;
            let mut rows = Vec::new();
            for f in families {
                let cases = (f.bench)(&gpu, *batch)?;
                let got = bench::run(&gpu, &cases, *repeats)?;
                if !json {
                    for r in &got {
                        println!(
                            "{:<24} {:<18} {:<36} {:>10.3} ms {:>8.2} GFLOP/s {:>8.2} GB/s",
                            r.kernel, r.direction, r.shape, r.median_ms, r.gflops, r.gbps
                        );
                    }
                }
                rows.extend(got);
            }
            if *json {
                let r = gpu.report();
                let out = serde_json::json!({ "adapter": r, "batch": batch, "repeats": repeats, "rows": rows });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(true)
        }
    }
}

fn print_model(spec: &ModelSpec, json: bool) -> Result<()> {
    let table = spec.layer_table();
    if json {
        let layers: Vec<_> =
            table.iter().map(|(n, s, m)| serde_json::json!({ "layer": n, "output": s, "macs": m })).collect();
        let out = serde_json::json!({ "model": spec, "parameters": spec.parameter_count(), "macs": spec.macs(), "layers": layers });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<40} {:>16} {:>14}", "layer", "output (C,H,W)", "multiply-adds");
    for (name, s, macs) in &table {
        println!("{name:<40} {:>16} {macs:>14}", format!("{}x{}x{}", s[0], s[1], s[2]));
    }
    println!("\nparameters     {} (learned; BN running statistics not counted)", spec.parameter_count());
    println!("multiply-adds  {} per image ({:.1} M)", spec.macs(), spec.macs() as f64 / 1e6);
    Ok(())
}

/// Prints per-file results; a file that failed is reported and the command
/// exits non-zero after the others are done.
fn report<T: Serialize>(results: &[FileResult<T>], json: bool, show: impl Fn(&T) -> String) -> Result<bool> {
    if json {
        println!("{}", serde_json::to_string_pretty(results)?);
    } else {
        for r in results {
            match (&r.result, &r.error) {
                (Some(v), _) => println!("{}: {}", r.path.display(), show(v)),
                (None, Some(e)) => eprintln!("error: {e}"),
                (None, None) => {}
            }
        }
    }
    Ok(results.iter().all(|r| r.error.is_none()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
