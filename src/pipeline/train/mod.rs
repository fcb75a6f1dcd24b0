//! `arcface train`: epochs of SGD with momentum and step decay on the
//! training split, validation after each epoch, metrics and curves, the
//! best-validation-loss checkpoint and the last one. A stopped run resumes
//! from its last completed epoch (`--resume`) and ends with the same weights
//! as an uninterrupted run: every epoch's shuffle and augmentation are
//! seeded by (seed, epoch), and the momentum buffers are saved.

mod align;
mod epoch;
mod init;
mod recalibrate;
mod state;
mod verification;

pub use align::aligned_data;
pub use recalibrate::recalibrate_bn;

use crate::data::dataset::{Dataset, Sample};
use crate::data::input::Framing;
use crate::data::split;
use crate::gpu::Gpu;
use crate::io::checkpoint::{self, CheckpointMeta, OpenSet};
use crate::models::{ModelSpec, Net};
use crate::nn::GpuBackend;
use crate::pipeline::report::{self, EpochMetrics};
use crate::pipeline::scoring::{eval_logits, score};
use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use epoch::EpochTrain;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelSpec,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Multiply the learning rate by `lr_gamma` every `lr_step` epochs.
    pub lr_step: usize,
    pub lr_gamma: f32,
    pub seed: u64,
    /// Only the first N people of the dataset (sorted by name); 0 = all.
    #[serde(default)]
    pub max_people: usize,
    /// Re-estimate the batch-norm running statistics with the epoch's final
    /// weights before validating (see `recalibrate_bn`).
    #[serde(default)]
    pub recalibrate_bn: bool,
    /// Trained on detected and aligned crops (`--align`): inference on whole
    /// photos must align them the same way.
    #[serde(default)]
    pub align: bool,
    /// Start from this checkpoint's backbone (imported or trained here) with
    /// a fresh head for the dataset's people.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// Train only the head for the first N epochs.
    #[serde(default)]
    pub freeze_backbone_epochs: usize,
    /// The photo folder the run was asked to train on (before alignment),
    /// so that `--resume` needs no flag repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// Shares of each person's photos held out for validation (of what the
    /// test part leaves) and for the test part (0: no test part).
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// How activations are stored while training (`--precision`).
    #[serde(default)]
    pub precision: Precision,
    /// Verification sets (insightface's `.bin`) evaluated after each epoch
    /// (`--val-bin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_bins: Vec<PathBuf>,
    /// Threads decoding and augmenting images (`--loader-threads`; 0: one
    /// per core). Not saved: the results do not depend on it.
    #[serde(skip)]
    pub loader_threads: usize,
}

/// Training's storage precision: f32, or mixed (f16 activations and their
/// gradients, f32 weights, gradients, momentum and sums, a dynamic loss
/// scale) where the adapter offers f16 (`GpuBackend::mixed_precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    /// As `--precision` and the run's options spell it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

fn default_val_fraction() -> f64 {
    split::VAL_FRACTION
}

fn default_test_fraction() -> f64 {
    split::TEST_FRACTION
}

impl TrainConfig {
    pub fn lr_at(&self, epoch: usize) -> f32 {
        self.lr * self.lr_gamma.powi((epoch / self.lr_step.max(1)) as i32)
    }
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size < 2 {
            bail!("--epochs must be >= 1 and --batch-size >= 2 (batch norm needs two images)");
        }
        if !(self.lr > 0.0) || !(0.0..1.0).contains(&self.momentum) || self.weight_decay < 0.0 {
            bail!("--lr must be > 0, --momentum in [0, 1), --weight-decay >= 0");
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) || !(0.0..1.0).contains(&self.test_fraction) {
            bail!("--val-fraction must be in (0, 1) and --test-fraction in [0, 1)");
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainOutcome {
    pub out: PathBuf,
    pub metrics: Vec<EpochMetrics>,
    pub best_epoch: usize,
    pub best_val_loss: f64,
    /// Set when training stopped early on a non-finite loss.
    pub diverged: Option<String>,
}

/// Run-folder file names.
pub const BEST: &str = "best.safetensors";
pub const LAST: &str = "last.safetensors";
pub(crate) const STATE: &str = "state.safetensors";
pub(crate) const CONFIG: &str = "config.json";
pub const SPLIT: &str = "split.csv";

/// The options saved with the run in `out`.
pub fn saved_config(out: &Path) -> Result<TrainConfig> {
    let path = out.join(CONFIG);
    if !path.exists() {
        bail!("{}: nothing to resume (no {CONFIG})", out.display());
    }
    let text = crate::data::bounded::read_to_string(&path, crate::data::bounded::Kind::Input)?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a run's options", path.display()))
}

/// Whether `out` already holds a training run (its options are saved).
pub fn holds_a_run(out: &Path) -> bool {
    out.join(CONFIG).is_file()
}

/// Removes what a run leaves in `out` (checkpoints, state, metrics, curves,
/// split, options), before another run overwrites it; other files stay.
pub fn clear_run(out: &Path) -> Result<()> {
    for f in [BEST, LAST, STATE, CONFIG, SPLIT, "metrics.csv", "metrics.json", "curves.png"] {
        match std::fs::remove_file(out.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("{}: cannot remove", out.join(f).display()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Trains a model on `data_dir` into the run folder `out`.
pub fn run(
    gpu: &Gpu,
    data_dir: &Path,
    out: &Path,
    mut cfg: TrainConfig,
    resume: bool,
    progress: &Progress,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    if cfg.precision == Precision::F16 {
        crate::nn::require_f16(gpu)?;
    }
    let data = dataset(data_dir, cfg.max_people, progress)?;
    if !cfg.val_bins.is_empty() && !cfg.model.has_embedding() {
        bail!("--val-bin: {:?} has no embedding to verify with (MobileFaceNet has)", cfg.model.arch);
    }
    let val_sets = verification::open(&cfg.val_bins)?;
    let fresh_split = if resume { None } else { Some(checked_split(&data, &cfg)?) };
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the run folder", out.display()))?;
    cfg.model.classes = data.people.len();
    if let Some(init) = &cfg.init {
        cfg.model = init::pretrained_spec(init, &cfg.model)?;
    }
    cfg.model.validate()?;
    let start = match fresh_split {
        Some(split) => state::fresh(out, &cfg, &data, split)?,
        None => state::resume(out, &cfg)?,
    };

    let mut b = GpuBackend::new(gpu)?;
    if cfg.precision == Precision::F16 {
        b.mixed_precision()?;
    }
    let mut net = if resume && state::has_state(out) {
        state::resumed_net(out, &mut b)?
    } else if let Some(init) = &cfg.init {
        init::pretrained(&mut b, init, cfg.model, cfg.seed)?
    } else {
        Net::init(&mut b, cfg.model, cfg.seed)?
    };
    let mut meta = CheckpointMeta::new(cfg.model, data.people.clone());
    meta.graph = net.imported_graph().cloned();
    meta.normalization = net.graph().normalization.clone();
    meta.training = serde_json::to_value(&cfg)?;
    // Photos prepared by `arcface prepare` (or `--align`) are aligned crops,
    // and so are RecordIO sets (insightface's are, and `prepare --format
    // rec` writes crops).
    let prepared = cfg.align
        || data_dir.join(crate::detect::prepare::REPORT).is_file()
        || crate::data::dataset::record_file(data_dir).is_some();
    meta.framing = Some(if prepared { Framing::AlignedFace } else { Framing::WholePhoto });
    let state::Start { split, mut metrics, epoch: first, mut best } = start;
    if !metrics.is_empty() {
        // The metrics files are rewritten from the state: a stop may have
        // come before they were.
        report::write_metrics(out, &metrics)?;
    }
    let mut diverged = None;
    // Images per epoch: a trailing batch of one is left out (batch norm).
    let per_epoch = (split.train.len() - usize::from(split.train.len() % cfg.batch_size == 1)) as u64;
    progress.expect(per_epoch * (cfg.epochs - first.min(cfg.epochs)) as u64);

    for epoch in first..cfg.epochs {
        let t = epoch::train_epoch(&mut b, &mut net, &cfg, &split.train, epoch, progress)?;
        if t.diverged.is_some() {
            diverged = t.diverged;
            progress.skip(per_epoch * (cfg.epochs - epoch - 1) as u64);
            break;
        }
        if cfg.recalibrate_bn {
            let norm = net.graph().normalization.clone();
            recalibrate_bn(&mut b, &mut net, &split.train, &norm, cfg.batch_size)?;
        }
        let (mut m, val_logits) = validate(&mut b, &mut net, &cfg, &split.val, epoch, &t)?;
        let norm = net.graph().normalization.clone();
        for set in &val_sets {
            m.verification.push(verification::evaluate(&mut b, &mut net, set, &norm, cfg.batch_size)?);
        }
        let sets: String = m
            .verification
            .iter()
            .map(|v| format!(" | {} {:.4} +- {:.4}", v.name, v.accuracy, v.accuracy_std))
            .collect();
        // Mixed precision: the loss scale reached and the steps it skipped.
        let scale = b
            .loss_scale_state()
            .map_or(String::new(), |[s, _, skipped]| format!(" | loss scale {s}, {skipped} steps skipped"));
        progress.line(&format!(
            "epoch {}/{}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3}{sets} | {:.1} img/s{scale}",
            m.epoch, cfg.epochs, m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy, m.images_per_second
        ));
        if !m.val_loss.is_finite() {
            diverged = Some(format!(
                "the validation loss became {} after epoch {} (lr {}); try --lr {} (one tenth)",
                m.val_loss,
                epoch + 1,
                cfg.lr_at(epoch),
                cfg.lr / 10.0
            ));
            progress.skip(per_epoch * (cfg.epochs - epoch - 1) as u64);
            break;
        }
        metrics.push(m);
        let labels: Vec<usize> = split.val.iter().map(|s| s.label).collect();
        meta.open_set = open_set(&val_logits, &labels, &cfg.model);
        save_epoch(out, &mut b, &net, &mut meta, &metrics, &mut best)?;
    }
    if let Some(why) = &diverged {
        eprintln!("stopped: {why}; the best checkpoint so far is kept");
    }
    Ok(TrainOutcome { out: out.to_path_buf(), metrics, best_epoch: best.0, best_val_loss: best.1, diverged })
}

/// The dataset (the first `max_people`, 0 = all), skipped files and thin
/// classes reported.
fn dataset(dir: &Path, max_people: usize, progress: &Progress) -> Result<Dataset> {
    let mut data = match crate::data::dataset::record_file(dir) {
        // A RecordIO set's headers are read one by one: a bar of its own.
        Some(rec) => Dataset::from_records(&rec, &Progress::new("records", 0, progress.is_quiet()))?,
        None => Dataset::scan(dir, true)?,
    };
    if max_people > 0 {
        data = data.first_people(max_people);
    }
    for s in &data.skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    for (label, name) in data.people.iter().enumerate() {
        if data.count(label) < 3 {
            eprintln!("warning: {name} has only {} image(s): not in every split part", data.count(label));
        }
    }
    Ok(data)
}

/// The split of a new run, refused when its validation part (or its test
/// part, unless there is to be none) came out empty: a best epoch chosen on
/// nothing, or a test accuracy of nothing, would look like results.
fn checked_split(data: &Dataset, cfg: &TrainConfig) -> Result<split::Split> {
    let s = split::stratified(data, cfg.seed, cfg.val_fraction, cfg.test_fraction);
    let counts: Vec<usize> = (0..data.people.len()).map(|l| data.count(l)).collect();
    let (least, most) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
    let photos = format!("{} photos of {} people ({least} to {most} each)", data.samples.len(), data.people.len());
    if s.val.is_empty() {
        bail!(
            "{}: the validation split is empty ({photos}; --val-fraction {} of each person's photos rounds to none): \
             add photos (3 or more per person put one in every part) or raise --val-fraction",
            data.root.display(),
            cfg.val_fraction
        );
    }
    if s.test.is_empty() && cfg.test_fraction > 0.0 {
        bail!(
            "{}: the test split is empty ({photos}; --test-fraction {} rounds to none): add photos, raise \
             --test-fraction, or pass --no-test to train without a test part",
            data.root.display(),
            cfg.test_fraction
        );
    }
    if s.train.len() < 2 {
        bail!(
            "{}: {} training photo(s) left after the split ({photos}): add photos",
            data.root.display(),
            s.train.len()
        );
    }
    Ok(s)
}

/// An ArcFace classifier's open-set threshold from its validation logits
/// (s x cosine to each class centre): the gallery's calibration, every
/// validation photo against every other person's centre at a false accept
/// rate of 1%. None for softmax heads (no centres) and empty splits.
pub fn open_set(logits: &[f32], labels: &[usize], spec: &crate::models::ModelSpec) -> Option<OpenSet> {
    let crate::models::Head::ArcFace { s, .. } = spec.head else { return None };
    let c = spec.classes;
    if labels.is_empty() || c < 2 {
        return None;
    }
    let mut impostor = Vec::new();
    let mut genuine = Vec::new();
    for (row, &y) in logits.chunks(c).zip(labels) {
        for (j, &v) in row.iter().enumerate() {
            let cos = v as f64 / s;
            if j == y {
                genuine.push(cos);
            } else {
                impostor.push(cos);
            }
        }
    }
    let far = 0.01;
    let impostors = impostor.len();
    let threshold = checkpoint::impostor_threshold(impostor, far);
    let accepted = genuine.iter().filter(|&&g| g >= threshold).count() as f64 / genuine.len() as f64;
    Some(OpenSet { threshold, far, photos: labels.len(), impostors, genuine_accepted: accepted })
}

/// The epoch's metrics: its training figures and the validation split's,
/// and the validation logits.
fn validate<'g>(
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    cfg: &TrainConfig,
    val: &[Sample],
    epoch: usize,
    t: &EpochTrain,
) -> Result<(EpochMetrics, Vec<f32>)> {
    let labels: Vec<usize> = val.iter().map(|s| s.label).collect();
    let norm = net.graph().normalization.clone();
    let logits = eval_logits(b, net, val, &norm, cfg.batch_size, false)?;
    let (val_loss, val_correct) = score(&logits, &labels, cfg.model.classes);
    let m = EpochMetrics {
        epoch: epoch + 1,
        lr: cfg.lr_at(epoch),
        train_loss: t.loss_sum / t.seen.max(1) as f64,
        train_accuracy: t.correct as f64 / t.seen.max(1) as f64,
        val_loss,
        val_accuracy: val_correct as f64 / labels.len().max(1) as f64,
        images_per_second: t.seen as f64 / t.seconds,
        verification: Vec::new(),
    };
    Ok((m, logits))
}

/// After a completed epoch: the best checkpoint when validation improved,
/// the last checkpoint, the optimiser state and the metrics; a stop loses
/// at most the epoch in progress.
fn save_epoch<'g>(
    out: &Path,
    b: &mut GpuBackend<'g>,
    net: &Net<GpuBackend<'g>>,
    meta: &mut CheckpointMeta,
    metrics: &[EpochMetrics],
    best: &mut (usize, f64),
) -> Result<()> {
    let m = metrics.last().expect("an epoch's metrics");
    meta.metrics = serde_json::to_value(m)?;
    if m.val_loss < best.1 {
        *best = (m.epoch, m.val_loss);
        checkpoint::save(&out.join(BEST), b, net, meta)?;
    }
    checkpoint::save(&out.join(LAST), b, net, meta)?;
    report::write_metrics(out, metrics)?;
    // Last: the state commits the epoch (see `state`).
    state::save(out, net, b, m.epoch, *best, metrics)
}
