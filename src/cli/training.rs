//! `arcface train`, `sweep`, `eval` and `demo`.

use super::args::{DetectArgs, GpuArgs, ModelArg, ModelArgs};
use super::output::json;
use crate::gpu::Gpu;
use crate::pipeline::demo;
use crate::pipeline::evaluate::{self, EvalReport};
use crate::pipeline::sweep::{self, SweepRow};
use crate::pipeline::train::{self, TrainConfig, BEST};
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// The options of a training run (train and sweep).
#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    /// Dataset folder: one sub-folder of images per person
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value_t = ModelArg::Mobilefacenet)]
    model: ModelArg,
    #[command(flatten)]
    shape: ModelArgs,
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
    #[command(flatten)]
    det: DetectArgs,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    /// The folder to train on: --data, or with --align its photos detected
    /// and aligned into `out`/aligned (kept on `resume`).
    fn training_data(&self, gpu: &Gpu, out: &Path, resume: bool) -> Result<PathBuf> {
        if !self.align {
            return Ok(self.data.clone());
        }
        let (mtcnn, opt) = (self.det.mtcnn.as_deref(), self.det.options());
        train::aligned_data(gpu, &self.data, out, resume, mtcnn, opt, self.quiet)
    }

    fn config(&self, lr: f32, momentum: f32) -> TrainConfig {
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
        }
    }
}

#[derive(Args, Debug)]
pub struct TrainCmd {
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
}

impl TrainCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let o = &self.opts;
        let data = o.training_data(&gpu, &self.out, self.resume)?;
        let r = train::run(&gpu, &data, &self.out, o.config(self.lr, self.momentum), self.resume, o.quiet)?;
        println!(
            "best epoch {} (validation loss {:.4}); checkpoints, metrics.csv and curves.png in {}",
            r.best_epoch,
            r.best_val_loss,
            r.out.display()
        );
        Ok(r.diverged.is_none())
    }
}

#[derive(Args, Debug)]
pub struct SweepCmd {
    #[command(flatten)]
    opts: TrainArgs,
    #[arg(long, value_delimiter = ',', default_value = "1e-5,1e-4,1e-3,1e-2")]
    lrs: Vec<f32>,
    #[arg(long, value_delimiter = ',', default_value = "0.9,0.95,0.99")]
    momentums: Vec<f32>,
    /// Folder for one run per pair, the table and the best model
    #[arg(long)]
    out: PathBuf,
}

impl SweepCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let o = &self.opts;
        // With --align the photos are aligned once, into OUT/aligned, for every run.
        let data = o.training_data(&gpu, &self.out, false)?;
        let rows = sweep::run(&gpu, &data, &self.out, &o.config(0.0, 0.0), &self.lrs, &self.momentums, o.quiet)?;
        print_sweep(&rows);
        Ok(rows.iter().any(|r| !r.diverged))
    }
}

#[derive(Args, Debug)]
pub struct EvalCmd {
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
pub struct DemoCmd {
    /// Run folder
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
}

impl DemoCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let (cfg, out) = (demo::config(), &self.out);
        let people = match cfg.max_people {
            0 => "all people".to_string(),
            n => format!("the first {n} people"),
        };
        println!(
            "demo: {:?} at {}x{} on {people} of {} (ORL faces, credit Olivetti Research Laboratory), {} epochs",
            cfg.model.arch,
            cfg.model.input,
            cfg.model.input,
            demo::data()?.display(),
            cfg.epochs
        );
        let r = demo::run(&gpu, out)?;
        print_eval(&r.test);
        println!("\ntest accuracy {:.3} on {} images, in {:.0} s", r.test.accuracy, r.test.images, r.seconds);
        println!("best checkpoint  {}", out.join(BEST).display());
        println!("metrics          {} and metrics.json", out.join("metrics.csv").display());
        println!("learning curves  {}", out.join("curves.png").display());
        println!("labels and split {}", out.join(train::SPLIT).display());
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
