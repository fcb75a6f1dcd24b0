//! `arcface train`, `sweep`, `eval` and `demo`.

use super::args::{DetectArgs, GpuArgs, ModelArg, ModelArgs, PrecisionArg};
use super::output::json;
use crate::gpu::Gpu;
use crate::models::Head;
use crate::pipeline::demo;
use crate::pipeline::evaluate::{self, EvalReport};
use crate::pipeline::sweep::{self, SweepRow};
use crate::pipeline::train::{self, TrainConfig, BEST};
use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// The options of a training run (train and sweep).
#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    /// Network to train
    #[arg(long, value_enum, default_value_t = ModelArg::Mobilefacenet)]
    model: ModelArg,
    #[command(flatten)]
    shape: ModelArgs,
    /// Passes over the training split
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images per SGD step (at least 2: batch norm)
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// L2 weight decay added to each gradient
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f32,
    /// Multiply the learning rate by --lr-gamma every N epochs
    #[arg(long, default_value_t = 3)]
    lr_step: usize,
    /// Learning-rate factor applied every --lr-step epochs
    #[arg(long, default_value_t = 0.5)]
    lr_gamma: f32,
    /// Seed of the split, the initial weights, the shuffle and augmentation
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of each person's photos (after the test part) held out for
    /// validation, which picks the best epoch
    #[arg(long, default_value_t = crate::data::split::VAL_FRACTION)]
    val_fraction: f64,
    /// Share of each person's photos held out for `arcface eval`
    #[arg(long, default_value_t = crate::data::split::TEST_FRACTION, conflicts_with = "no_test")]
    test_fraction: f64,
    /// No test part: every photo trains or validates (`eval` then has
    /// nothing to test)
    #[arg(long)]
    no_test: bool,
    /// Only the first N people (in name order); 0 = all
    #[arg(long, default_value_t = 0)]
    people: usize,
    /// After each epoch, set the batch-norm running statistics to the
    /// average over the training images with the epoch's weights ("precise
    /// BN"; costs one forward pass per epoch); for runs of few steps per epoch
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
    /// How activations are stored: f32, or f16 (mixed precision: weights,
    /// gradients and sums stay f32, the loss is scaled; adapters with
    /// SHADER_F16 only)
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// A verification set as insightface distributes them (lfw.bin,
    /// cfp_fp.bin, ...; repeatable): its 10-fold accuracy with flip after
    /// each epoch, in the epoch line, metrics.csv/json and curves.png
    #[arg(long, value_name = "FILE.bin")]
    val_bin: Vec<PathBuf>,
    /// Threads decoding and augmenting the images ahead of the GPU (0: one
    /// per core); the results do not depend on it
    #[arg(long, default_value_t = 0)]
    loader_threads: usize,
    #[command(flatten)]
    det: DetectArgs,
    /// No progress bars or per-epoch lines
    #[arg(long)]
    quiet: bool,
    /// Overwrite the run(s) already in --out
    #[arg(long)]
    force: bool,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl TrainArgs {
    /// The folder to train on: the config's photos, or with --align those
    /// photos detected and aligned into `out`/aligned (kept on `resume`).
    fn training_data(&self, gpu: &Gpu, cfg: &TrainConfig, out: &Path, resume: bool) -> Result<PathBuf> {
        let data = cfg.data.clone().expect("a run's photo folder");
        if !cfg.align {
            return Ok(data);
        }
        let (mtcnn, opt) = (self.det.mtcnn.as_deref(), self.det.options());
        train::aligned_data(gpu, &data, out, resume, mtcnn, opt, &Progress::new("photos", 0, self.quiet))
    }

    fn config(&self, data: Option<&Path>, lr: f32, momentum: f32) -> TrainConfig {
        TrainConfig {
            model: self.shape.spec(self.model, 0),
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
            data: data.map(Path::to_path_buf),
            val_fraction: self.val_fraction,
            test_fraction: if self.no_test { 0.0 } else { self.test_fraction },
            precision: self.precision.into(),
            val_bins: self.val_bin.clone(),
            loader_threads: self.loader_threads,
        }
    }

    /// Refuses to write over a run already in `out` unless --force, which
    /// clears the old run's files first.
    fn claim(&self, out: &Path, holds: bool, what: &str) -> Result<()> {
        match (holds, self.force) {
            (false, _) => Ok(()),
            (true, false) => bail!(
                "--out {}: already holds {what}; pass --force to overwrite it{}",
                out.display(),
                if what == "a run" { " or --resume to continue it" } else { "" }
            ),
            (true, true) => train::clear_run(out),
        }
    }
}

#[derive(Args, Debug)]
pub struct TrainCmd {
    /// Dataset: a folder with one sub-folder of images per person, or a
    /// RecordIO set (a folder with train.rec and train.idx, or the .rec
    /// file; people named by a names.txt beside it) (with --resume: the
    /// run's own, saved in its config.json)
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    #[command(flatten)]
    opts: TrainArgs,
    /// Learning rate (default: the one that trains the model, measured in
    /// README: 0.1 for MobileFaceNet, 0.001 for MiniNetwork)
    #[arg(long)]
    lr: Option<f32>,
    /// SGD momentum
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// Run folder: checkpoints, metrics, curves, the split
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its last completed epoch with its
    /// saved options; flags given again must agree with them (but --epochs,
    /// which may extend the run)
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// The ids of the flags given on the command line or through the
    /// environment (filled in after parsing), for --resume's check.
    #[arg(skip)]
    pub(super) given: Vec<String>,
}

impl TrainCmd {
    /// --lr, or the model's default.
    fn lr(&self) -> f32 {
        self.lr.unwrap_or(match self.opts.model {
            ModelArg::Mobilefacenet => 0.1,
            ModelArg::Mininet => 0.001,
        })
    }

    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let o = &self.opts;
        let cfg = if self.resume {
            self.resumed_config(train::saved_config(&self.out)?)?
        } else {
            o.claim(&self.out, train::holds_a_run(&self.out), "a run")?;
            o.config(self.data.as_deref(), self.lr(), self.momentum)
        };
        let gpu = gpu.open()?;
        let data = o.training_data(&gpu, &cfg, &self.out, self.resume)?;
        let r = train::run(&gpu, &data, &self.out, cfg, self.resume, &Progress::new("images", 0, o.quiet))?;
        if o.json {
            json(&r)?;
        } else if r.metrics.is_empty() {
            println!("no epoch completed; nothing was saved but the run's options and split in {}", r.out.display());
        } else {
            println!(
                "best epoch {} (validation loss {:.4}); checkpoints, metrics.csv and curves.png in {}",
                r.best_epoch,
                r.best_val_loss,
                r.out.display()
            );
        }
        Ok(r.diverged.is_none())
    }

    /// The saved options of the run in --out, with --epochs if given; any
    /// other flag given must agree with them, or the error names it.
    fn resumed_config(&self, saved: TrainConfig) -> Result<TrainConfig> {
        let asked = self.opts.config(self.data.as_deref(), self.lr(), self.momentum);
        let given = |id: &str| self.given.iter().any(|g| g == id);
        let head = |c: &TrainConfig, scale: bool| match c.model.head {
            Head::ArcFace { s, m } => format!("{}", if scale { s } else { m }),
            Head::Softmax => "-".into(),
        };
        let head_name = |c: &TrainConfig| match c.model.head {
            Head::ArcFace { .. } => "arcface",
            Head::Softmax => "softmax",
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map_or("-".into(), |p| p.display().to_string());
        // A run saved before its photo folder was recorded takes --data as given.
        let saved_data = if saved.data.is_some() { path(&saved.data) } else { path(&asked.data) };
        let bins = |c: &TrainConfig| match c.val_bins.as_slice() {
            [] => "none".to_string(),
            b => b.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "),
        };
        let checks: [(&str, &str, String, String); 22] = [
            ("val_fraction", "--val-fraction", saved.val_fraction.to_string(), asked.val_fraction.to_string()),
            ("test_fraction", "--test-fraction", saved.test_fraction.to_string(), asked.test_fraction.to_string()),
            ("data", "--data", saved_data, path(&asked.data)),
            ("model", "--model", format!("{:?}", saved.model.arch), format!("{:?}", asked.model.arch)),
            ("head", "--head", head_name(&saved).into(), head_name(&asked).into()),
            ("s", "--scale", head(&saved, true), head(&asked, true)),
            ("m", "--margin", head(&saved, false), head(&asked, false)),
            ("input", "--input", saved.model.input.to_string(), asked.model.input.to_string()),
            ("batch_size", "--batch-size", saved.batch_size.to_string(), asked.batch_size.to_string()),
            ("lr", "--lr", saved.lr.to_string(), asked.lr.to_string()),
            ("momentum", "--momentum", saved.momentum.to_string(), asked.momentum.to_string()),
            ("weight_decay", "--weight-decay", saved.weight_decay.to_string(), asked.weight_decay.to_string()),
            ("lr_step", "--lr-step", saved.lr_step.to_string(), asked.lr_step.to_string()),
            ("lr_gamma", "--lr-gamma", saved.lr_gamma.to_string(), asked.lr_gamma.to_string()),
            ("seed", "--seed", saved.seed.to_string(), asked.seed.to_string()),
            ("people", "--people", saved.max_people.to_string(), asked.max_people.to_string()),
            ("recalibrate_bn", "--recalibrate-bn", saved.recalibrate_bn.to_string(), asked.recalibrate_bn.to_string()),
            ("align", "--align", saved.align.to_string(), asked.align.to_string()),
            ("init", "--init", path(&saved.init), path(&asked.init)),
            ("precision", "--precision", saved.precision.name().into(), asked.precision.name().into()),
            ("val_bin", "--val-bin", bins(&saved), bins(&asked)),
            (
                "freeze_backbone_epochs",
                "--freeze-backbone-epochs",
                saved.freeze_backbone_epochs.to_string(),
                asked.freeze_backbone_epochs.to_string(),
            ),
        ];
        for (id, flag, was, now) in checks {
            if given(id) && was != now {
                bail!(
                    "--resume: {flag} {now} differs from the run's {was} (saved in {}); leave {flag} out to \
                     continue with the saved value, or start a new run",
                    self.out.join("config.json").display()
                );
            }
        }
        if given("freeze_backbone_epochs") && saved.freeze_backbone_epochs != asked.freeze_backbone_epochs {
            bail!(
                "--resume: --freeze-backbone-epochs {} differs from the run's {}",
                asked.freeze_backbone_epochs,
                saved.freeze_backbone_epochs
            );
        }
        if saved.data.is_none() && asked.data.is_none() {
            bail!("--resume: the run in {} predates saved photo folders; give --data", self.out.display());
        }
        let data = saved.data.clone().or(asked.data);
        let epochs = if given("epochs") { asked.epochs } else { saved.epochs };
        Ok(TrainConfig { epochs, data, loader_threads: asked.loader_threads, ..saved })
    }
}

#[derive(Args, Debug)]
pub struct SweepCmd {
    /// Dataset: a folder with one sub-folder of images per person, or a
    /// RecordIO set (train.rec and train.idx)
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    opts: TrainArgs,
    /// Learning rates to try
    #[arg(long, value_delimiter = ',', default_value = "1e-5,1e-4,1e-3,1e-2")]
    lrs: Vec<f32>,
    /// SGD momentums to try with each learning rate
    #[arg(long, value_delimiter = ',', default_value = "0.9,0.95,0.99")]
    momentums: Vec<f32>,
    /// Folder for one run per pair, the table and the best model
    #[arg(long)]
    out: PathBuf,
}

impl SweepCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let o = &self.opts;
        let holds = self.out.join("sweep.json").is_file() || train::holds_a_run(&self.out);
        o.claim(&self.out, holds, "a sweep")?;
        let cfg = o.config(Some(&self.data), 0.0, 0.0);
        let gpu = gpu.open()?;
        // With --align the photos are aligned once, into OUT/aligned, for every run.
        let data = o.training_data(&gpu, &cfg, &self.out, false)?;
        let progress = Progress::new("images", 0, o.quiet).repeated(self.lrs.len() * self.momentums.len());
        let rows = sweep::run(&gpu, &data, &self.out, &cfg, &self.lrs, &self.momentums, &progress)?;
        drop(progress);
        if o.json {
            json(&serde_json::json!({ "runs": rows, "best": sweep::best(&rows) }))?;
        } else {
            print_sweep(&rows);
        }
        Ok(rows.iter().any(|r| !r.diverged))
    }
}

#[derive(Args, Debug)]
pub struct EvalCmd {
    /// Checkpoint of a run (its split.csv is read from the same folder)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Look the test images up in this folder (person/file) instead
    #[arg(long)]
    data: Option<PathBuf>,
    /// Diagnostic: batch norm with the test set's own statistics instead
    /// of the running ones (tells lagging running statistics from a bad model)
    #[arg(long)]
    batch_stats: bool,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl EvalCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let r = evaluate::run(&gpu.open()?, &self.checkpoint, self.data.as_deref(), self.batch_stats)?;
        if self.json {
            json(&r)?;
        } else {
            print_eval(&r);
        }
        Ok(true)
    }
}

#[derive(Args, Debug)]
pub struct CalibrateCmd {
    /// Checkpoint of an ArcFace classifier (rewritten with the threshold)
    #[arg(long)]
    checkpoint: PathBuf,
    /// The run's split (default: split.csv beside the checkpoint)
    #[arg(long)]
    split: Option<PathBuf>,
}

impl CalibrateCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let o = crate::pipeline::calibrate::run(&gpu.open()?, &self.checkpoint, self.split.as_deref())?;
        println!(
            "{}: unknown below cosine {:.4} (false accept rate {} on {} impostor comparisons of {} validation \
             photos; {:.1}% of them named right at it)",
            self.checkpoint.display(),
            o.threshold,
            o.far,
            o.impostors,
            o.photos,
            o.genuine_accepted * 100.0
        );
        Ok(true)
    }
}

#[derive(Args, Debug)]
pub struct DemoCmd {
    /// Run folder (a demo run already there is replaced)
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Faces to train on, one folder per person (default: the bundled ORL
    /// faces, data/orl of the source tree)
    #[arg(long, env = "ARCFACE_DEMO_DATA")]
    data: Option<PathBuf>,
    /// No progress bars or per-epoch lines
    #[arg(long)]
    quiet: bool,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl DemoCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let data = match &self.data {
            Some(d) => d.clone(),
            None => demo::data().context("pass --data DIR (ORL-style faces, one folder per person)")?,
        };
        let gpu = gpu.open()?;
        let (cfg, out) = (demo::config(), &self.out);
        let people = match cfg.max_people {
            0 => "all people".to_string(),
            n => format!("the first {n} people"),
        };
        if !self.json {
            println!(
                "demo: {:?} at {}x{} on {people} of {}{}, {} epochs",
                cfg.model.arch,
                cfg.model.input,
                cfg.model.input,
                data.display(),
                if self.data.is_none() { " (ORL faces, credit Olivetti Research Laboratory)" } else { "" },
                cfg.epochs
            );
        }
        let r = demo::run(&gpu, &data, out, &Progress::new("images", 0, self.quiet))?;
        if self.json {
            json(&serde_json::json!({
                "test": r.test, "training": r.training, "seconds": r.seconds, "out": out,
            }))?;
        } else {
            print_eval(&r.test);
            println!("\ntest accuracy {:.3} on {} images, in {:.0} s", r.test.accuracy, r.test.images, r.seconds);
            println!("best checkpoint  {}", out.join(BEST).display());
            println!("metrics          {} and metrics.json", out.join("metrics.csv").display());
            println!("learning curves  {}", out.join("curves.png").display());
            println!("labels and split {}", out.join(train::SPLIT).display());
        }
        if let Some(why) = r.training.diverged {
            bail!("training stopped early: {why}");
        }
        Ok(true)
    }
}

fn print_eval(r: &EvalReport) {
    println!("test images  {}\nloss         {:.4}\naccuracy     {:.4}\n", r.images, r.loss, r.accuracy);
    println!("{:<16} {:>8} {:>6} {:>9}", "person", "correct", "total", "accuracy");
    for p in &r.per_person {
        println!("{:<16} {:>8} {:>6} {:>9.3}", p.person, p.correct, p.total, p.accuracy);
    }
    if r.confusion.len() <= 20 {
        println!("\nconfusion matrix (rows: true person, columns: predicted, label order)");
        for row in &r.confusion {
            println!("{}", row.iter().map(|v| format!("{v:>3}")).collect::<String>());
        }
    }
    println!("\nconfusion matrix image: {}", r.confusion_png);
    if r.misclassified.is_empty() {
        println!("every test photo named right");
    } else {
        println!("\nnamed wrong ({}):", r.misclassified.len());
        for m in &r.misclassified {
            println!("  {}: {} named {}", m.path.display(), m.person, m.predicted);
        }
    }
}

fn print_sweep(rows: &[SweepRow]) {
    println!("{:>10} {:>9} {:>14} {:>6} {:>9}  diverged", "lr", "momentum", "best val loss", "epoch", "val acc");
    for r in rows {
        println!(
            "{:>10.0e} {:>9} {:>14.4} {:>6} {:>9.3}  {}",
            r.lr,
            r.momentum,
            r.best_val_loss,
            r.best_epoch,
            r.val_accuracy,
            if r.diverged { "yes" } else { "no" }
        );
    }
}
