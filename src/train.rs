//! `arcface train`: epochs of SGD with momentum and step decay on the
//! training split, validation after each epoch, metrics and curves, the
//! best-validation-loss checkpoint and the last one. A stopped run resumes
//! from its last completed epoch (`--resume`) and ends with the same weights
//! as an uninterrupted run: every epoch's shuffle and augmentation are
//! seeded by (seed, epoch), and the momentum buffers are saved.

use crate::checkpoint::{self, CheckpointMeta, Normalization};
use crate::data::augment;
use crate::data::dataset::{Dataset, Sample};
use crate::data::split::{self, Split};
use crate::gpu::Gpu;
use crate::kernels::sgd::Sgd;
use crate::models::{Arch, Head, ModelSpec, Net};
use crate::nn::{Backend, GpuBackend};
use crate::report;
use crate::tensorfile::{write_atomic, Loaded, TensorFile};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f32,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub images_per_second: f64,
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
const STATE: &str = "state.safetensors";
const CONFIG: &str = "config.json";
pub const SPLIT: &str = "split.csv";

/// Decoded images of a split, kept in memory across epochs.
struct Images(HashMap<PathBuf, image::RgbImage>);

impl Images {
    fn load(samples: &[&Sample]) -> Result<Images> {
        let mut m = HashMap::new();
        for s in samples {
            m.insert(s.path.clone(), crate::preprocess::open_rgb(&s.path)?);
        }
        Ok(Images(m))
    }
    fn get(&self, p: &Path) -> &image::RgbImage {
        &self.0[p]
    }
}

/// Mean cross-entropy and correct count of eval logits (computed on the CPU).
pub fn score(logits: &[f32], labels: &[usize], classes: usize) -> (f64, usize) {
    let mut loss = 0.0;
    let mut correct = 0;
    for (row, &y) in logits.chunks(classes).zip(labels) {
        let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = mx + row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
        loss += lse - row[y] as f64;
        if argmax(row) == y {
            correct += 1;
        }
    }
    (loss / labels.len().max(1) as f64, correct)
}

pub fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

/// Eval-mode logits of samples, in batches.
pub fn eval_logits<'g>(
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    samples: &[Sample],
    norm: &Normalization,
    batch: usize,
    batch_stats: bool,
) -> Result<Vec<f32>> {
    let size = net.spec.input;
    let mut out = Vec::new();
    for chunk in samples.chunks(batch.max(1)) {
        let xt = b.upload(&inputs(chunk, size, norm)?, &[chunk.len(), 3, size, size])?;
        let logits = net.logits_with(b, &xt, batch_stats)?;
        out.extend(b.download(&logits));
    }
    Ok(out)
}

/// The model a run from `--init` trains: the checkpoint's backbone (an
/// imported network, or MobileFaceNet) with an ArcFace head for `want`'s
/// classes.
fn pretrained_spec(init: &Path, want: &ModelSpec) -> Result<ModelSpec> {
    let file = TensorFile::read(init)?;
    let head = match want.head {
        Head::ArcFace { .. } => want.head,
        Head::Softmax => bail!("--init: fine-tuning uses an ArcFace head (--head arcface)"),
    };
    if crate::graph::is_graph(&file) {
        let def = crate::graph::read_def(init, &file)?;
        return Ok(ModelSpec { arch: Arch::Imported, input: def.input_size, classes: want.classes, head });
    }
    let (meta, _) = checkpoint::read_meta(init)?;
    match meta.model.arch {
        Arch::MiniNet => bail!("--init {}: MiniNetwork has no backbone to fine-tune", init.display()),
        arch => Ok(ModelSpec { arch, input: meta.model.input, classes: want.classes, head }),
    }
}

/// The network of `pretrained_spec`, its head freshly initialised (seeded).
fn pretrained<'g>(b: &mut GpuBackend<'g>, init: &Path, spec: ModelSpec, seed: u64) -> Result<Net<GpuBackend<'g>>> {
    let file = TensorFile::read(init)?;
    if crate::graph::is_graph(&file) {
        let def = crate::graph::read_def(init, &file)?;
        let weights = file.tensors.into_iter().map(|(n, t)| (n, t.shape, t.values));
        return Net::pretrained(b, spec, def, weights, seed);
    }
    let (from, meta) = checkpoint::load(init, b)?;
    let mut net = match &meta.graph {
        Some(def) => Net::pretrained(b, spec, def.clone(), [], seed)?,
        None => Net::init(b, spec, seed)?,
    };
    for p in &from.params.params {
        if p.name.starts_with("head.") {
            continue;
        }
        if net.params.contains(&p.name) {
            net.params.set(&p.name, p.value.clone());
        } else {
            net.params.add(&p.name, p.value.clone(), p.trainable);
        }
    }
    Ok(net)
}

/// Batches of train-mode forward passes after each epoch with
/// `--recalibrate-bn`: with momentum 0.1, 0.9^50 = 0.5% of the statistics
/// from before remain.
pub const RECALIBRATION_BATCHES: usize = 50;

/// "Precise BN": with few optimiser steps per epoch the running statistics
/// (an average over steps whose weights kept changing) lag the network, and
/// eval mode collapses while training accuracy is high. This runs the fixed,
/// final weights in train mode over the training images (resize + normalise,
/// no augmentation) for at least one pass and `min_batches` batches, so the
/// running statistics describe these weights. Weights and momentum buffers
/// are untouched, so training itself is unchanged.
pub fn recalibrate_bn<'g>(
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    samples: &[Sample],
    norm: &Normalization,
    batch: usize,
    min_batches: usize,
) -> Result<()> {
    let size = net.spec.input;
    let chunks: Vec<&[Sample]> = samples.chunks(batch.max(2)).filter(|c| c.len() > 1).collect();
    if chunks.is_empty() {
        return Ok(());
    }
    // Uploaded once; the passes only read them.
    let batches: Vec<_> =
        chunks.iter().map(|c| b.upload(&inputs(c, size, norm)?, &[c.len(), 3, size, size])).collect::<Result<_>>()?;
    for xt in batches.iter().cycle().take(min_batches.max(batches.len())) {
        net.logits_with(b, xt, true)?;
    }
    Ok(())
}

/// Evaluation inputs (resize + normalise) of samples, one batch, flat.
fn inputs(samples: &[Sample], size: usize, norm: &Normalization) -> Result<Vec<f32>> {
    let mut x = Vec::with_capacity(samples.len() * 3 * size * size);
    for s in samples {
        x.extend(crate::preprocess::load_input(&s.path, size, norm)?);
    }
    Ok(x)
}

fn save_state<'g>(
    path: &Path,
    net: &Net<GpuBackend<'g>>,
    b: &mut GpuBackend<'g>,
    epoch: usize,
    best: (usize, f64),
) -> Result<()> {
    let mut tensors = BTreeMap::new();
    for p in &net.params.params {
        if let Some(v) = &p.velocity {
            tensors.insert(format!("velocity.{}", p.name), Loaded { shape: v.shape.clone(), values: b.download(v) });
        }
    }
    let meta = HashMap::from([
        ("epochs_done".to_string(), epoch.to_string()),
        ("best_epoch".to_string(), best.0.to_string()),
        ("best_val_loss".to_string(), best.1.to_string()),
    ]);
    write_atomic(path, &tensors, meta)
}

fn progress(epoch: usize, epochs: usize, done: usize, total: usize, loss: f64, rate: f64) {
    let width = 24;
    let filled = width * done / total.max(1);
    let eta = (total - done) as f64 / rate.max(1e-9);
    eprint!(
        "\repoch {epoch}/{epochs} [{}{}] {done}/{total} loss {loss:.4} {rate:.1} img/s ETA {:.0}s   ",
        "#".repeat(filled),
        ".".repeat(width - filled),
        eta
    );
    let _ = std::io::stderr().flush();
}

/// Trains a model on `data_dir` into the run folder `out`.
pub fn run(
    gpu: &Gpu,
    data_dir: &Path,
    out: &Path,
    mut cfg: TrainConfig,
    resume: bool,
    quiet: bool,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the run folder", out.display()))?;
    let mut data = Dataset::scan(data_dir, true)?;
    if cfg.max_people > 0 {
        data = data.first_people(cfg.max_people);
    }
    for s in &data.skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    for (label, name) in data.people.iter().enumerate() {
        if data.count(label) < 3 {
            eprintln!("warning: {name} has only {} image(s): not in every split part", data.count(label));
        }
    }
    cfg.model.classes = data.people.len();
    if let Some(init) = &cfg.init {
        cfg.model = pretrained_spec(init, &cfg.model)?;
    }
    cfg.model.validate()?;

    let (split, mut metrics, start_epoch, mut best) = if resume {
        let saved: TrainConfig = serde_json::from_str(
            &std::fs::read_to_string(out.join(CONFIG))
                .with_context(|| format!("{}: nothing to resume", out.display()))?,
        )?;
        if (TrainConfig { epochs: cfg.epochs, ..saved.clone() }) != cfg {
            bail!("--resume: the options differ from the run in {} (only --epochs may change)", out.display());
        }
        let (split, _) = Split::read_csv(&out.join(SPLIT))?;
        let metrics: Vec<EpochMetrics> = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json"))?)?;
        let state = TensorFile::read(&out.join(STATE))?;
        let num =
            |k: &str| -> Result<String> { state.metadata.get(k).cloned().with_context(|| format!("state: no {k}")) };
        let best = (num("best_epoch")?.parse()?, num("best_val_loss")?.parse()?);
        (split, metrics, num("epochs_done")?.parse::<usize>()?, best)
    } else {
        let split = split::stratified(&data, cfg.seed);
        split.write_csv(&out.join(SPLIT), &data.people)?;
        std::fs::write(out.join(CONFIG), serde_json::to_string_pretty(&cfg)?)?;
        (split, Vec::new(), 0, (0, f64::INFINITY))
    };

    let mut b = GpuBackend::new(gpu)?;
    let mut net = if resume {
        let (mut net, _) = checkpoint::load(&out.join(LAST), &mut b)?;
        let state = TensorFile::read(&out.join(STATE))?;
        for p in &mut net.params.params {
            if let Ok(v) = state.get(&format!("velocity.{}", p.name)) {
                p.velocity = Some(b.upload(&v.values, &v.shape)?);
            }
        }
        net
    } else if let Some(init) = &cfg.init {
        pretrained(&mut b, init, cfg.model, cfg.seed)?
    } else {
        Net::init(&mut b, cfg.model, cfg.seed)?
    };
    let norm = Normalization::default();
    let mut meta = CheckpointMeta::new(cfg.model, data.people.clone());
    meta.graph = net.graph.as_deref().cloned();
    meta.training = serde_json::to_value(&cfg)?;
    let train_refs: Vec<&Sample> = split.train.iter().collect();
    let images = Images::load(&train_refs)?;
    let size = cfg.model.input;
    let mut diverged = None;

    for epoch in start_epoch..cfg.epochs {
        net.freeze_backbone = epoch < cfg.freeze_backbone_epochs;
        let lr = cfg.lr_at(epoch);
        let h = Sgd { lr, momentum: cfg.momentum, weight_decay: cfg.weight_decay };
        let mut order: Vec<usize> = (0..split.train.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)));
        let mut aug_rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(7_919).wrapping_add(epoch as u64 + 1));
        let started = Instant::now();
        let (mut loss_sum, mut seen, mut correct) = (0.0, 0, 0);
        // A last batch of one image is left out: batch norm needs two.
        let batches: Vec<&[usize]> = order.chunks(cfg.batch_size).filter(|c| c.len() > 1).collect();
        let total: usize = batches.iter().map(|c| c.len()).sum();
        for batch in batches {
            let mut x = Vec::with_capacity(batch.len() * 3 * size * size);
            let mut labels = Vec::with_capacity(batch.len());
            for &i in batch {
                let s = &split.train[i];
                x.extend(augment::augment(images.get(&s.path), size, &norm, &mut aug_rng));
                labels.push(s.label as u32);
            }
            let xt = b.upload(&x, &[batch.len(), 3, size, size])?;
            let lt = b.labels(&labels)?;
            let (loss, logits) = net.train_step(&mut b, &xt, &lt, &h)?;
            let loss = b.download(&loss)[0] as f64;
            if !loss.is_finite() {
                diverged = Some(format!("the training loss became {loss} in epoch {} (lr {lr})", epoch + 1));
                break;
            }
            let logits = b.download(&logits);
            for (row, &y) in logits.chunks(cfg.model.classes).zip(&labels) {
                correct += (argmax(row) == y as usize) as usize;
            }
            loss_sum += loss * batch.len() as f64;
            seen += batch.len();
            if !quiet {
                progress(
                    epoch + 1,
                    cfg.epochs,
                    seen,
                    total,
                    loss_sum / seen as f64,
                    seen as f64 / started.elapsed().as_secs_f64(),
                );
            }
        }
        if !quiet {
            eprintln!();
        }
        if diverged.is_some() {
            break;
        }
        let secs = started.elapsed().as_secs_f64();
        if cfg.recalibrate_bn {
            recalibrate_bn(&mut b, &mut net, &split.train, &norm, cfg.batch_size, RECALIBRATION_BATCHES)?;
        }
        let val_labels: Vec<usize> = split.val.iter().map(|s| s.label).collect();
        let val_logits = eval_logits(&mut b, &mut net, &split.val, &norm, cfg.batch_size, false)?;
        let (val_loss, val_correct) = score(&val_logits, &val_labels, cfg.model.classes);
        let m = EpochMetrics {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_accuracy: val_correct as f64 / val_labels.len().max(1) as f64,
            images_per_second: seen as f64 / secs,
        };
        if !quiet {
            eprintln!(
                "epoch {}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} | {:.1} img/s",
                m.epoch, m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy, m.images_per_second
            );
        }
        if !val_loss.is_finite() {
            diverged = Some(format!("the validation loss became {val_loss} after epoch {}", epoch + 1));
            break;
        }
        metrics.push(m);
        meta.metrics = serde_json::to_value(metrics.last())?;
        if val_loss < best.1 {
            best = (epoch + 1, val_loss);
            checkpoint::save(&out.join(BEST), &mut b, &net, &meta)?;
        }
        // Last checkpoint, optimizer state and metrics: a stop loses at most this epoch.
        checkpoint::save(&out.join(LAST), &mut b, &net, &meta)?;
        save_state(&out.join(STATE), &net, &mut b, epoch + 1, best)?;
        report::write_metrics(out, &metrics)?;
    }
    if let Some(why) = &diverged {
        eprintln!("stopped: {why}; the best checkpoint so far is kept");
    }
    Ok(TrainOutcome { out: out.to_path_buf(), metrics, best_epoch: best.0, best_val_loss: best.1, diverged })
}
