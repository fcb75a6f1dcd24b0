//! What a run folder keeps so that `--resume` continues exactly where a run
//! stopped: the options (`config.json`), the split (`split.csv`), and the
//! state (`state.safetensors`): the weights, the momentum buffers, the
//! epochs done, the best epoch so far and the metrics. The state is the
//! commit point: it is written whole (beside, then renamed) after an
//! epoch's other files, and a resumed run reads only it, so a process
//! killed at any moment resumes from the last committed epoch, whatever
//! else it was writing (tests/crash.rs).

use super::{TrainConfig, CONFIG, LAST, SPLIT, STATE};
use crate::data::dataset::Dataset;
use crate::data::split::Split;
use crate::io::checkpoint;
use crate::io::tensorfile::{write_atomic, Loaded, TensorFile};
use crate::models::Net;
use crate::nn::{Backend, GpuBackend};
use crate::pipeline::report::EpochMetrics;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Where a run starts: its split, the metrics of the epochs done, the first
/// epoch to train and the best (epoch, validation loss) so far.
pub struct Start {
    pub split: Split,
    pub metrics: Vec<EpochMetrics>,
    pub epoch: usize,
    pub best: (usize, f64),
}

/// A new run: the split drawn and saved with the options.
pub fn fresh(out: &Path, cfg: &TrainConfig, data: &Dataset, split: Split) -> Result<Start> {
    split.write_csv(&out.join(SPLIT), &data.people)?;
    crate::data::atomic_file::write(&out.join(CONFIG), serde_json::to_string_pretty(cfg)?.as_bytes())?;
    Ok(Start { split, metrics: Vec::new(), epoch: 0, best: (0, f64::INFINITY) })
}

/// The stopped run in `out`, whose options must equal `cfg` but for `epochs`
/// (and the photo folder). A run stopped before its first epoch was
/// committed starts again from epoch 0 with its split.
pub fn resume(out: &Path, cfg: &TrainConfig) -> Result<Start> {
    let saved = super::saved_config(out)?;
    if (TrainConfig { epochs: cfg.epochs, data: cfg.data.clone(), loader_threads: cfg.loader_threads, ..saved.clone() })
        != *cfg
    {
        bail!("--resume: the options differ from the run in {} (only --epochs may change)", out.display());
    }
    let (split, _) = Split::read_csv(&out.join(SPLIT))?;
    if !has_state(out) {
        return Ok(Start { split, metrics: Vec::new(), epoch: 0, best: (0, f64::INFINITY) });
    }
    let state = TensorFile::read(&out.join(STATE))?;
    let num = |k: &str| -> Result<String> { state.metadata.get(k).cloned().with_context(|| format!("state: no {k}")) };
    let best = (num("best_epoch")?.parse()?, num("best_val_loss")?.parse()?);
    let metrics: Vec<EpochMetrics> = match state.metadata.get("metrics") {
        Some(m) => serde_json::from_str(m)?,
        // A state written before the metrics were kept in it.
        None => serde_json::from_str(&crate::data::bounded::read_to_string(
            &out.join("metrics.json"),
            crate::data::bounded::Kind::Input,
        )?)?,
    };
    Ok(Start { split, metrics, epoch: num("epochs_done")?.parse()?, best })
}

/// Whether the run in `out` has a committed epoch to continue from.
/// The state's entry for mixed precision's loss scale (`sgd::LossScale`).
pub(crate) const LOSS_SCALE: &str = "loss_scale";

pub fn has_state(out: &Path) -> bool {
    out.join(STATE).is_file()
}

/// The network of the run in `out` as its state holds it: the structure
/// from the last checkpoint, the weights and momentum buffers from the
/// state (the checkpoint may be an epoch ahead if a stop came between).
pub fn resumed_net<'g>(out: &Path, b: &mut GpuBackend<'g>) -> Result<Net<GpuBackend<'g>>> {
    let (mut net, _) = checkpoint::load(&out.join(LAST), b)?;
    let state = TensorFile::read(&out.join(STATE))?;
    for p in &mut net.params.params {
        if let Ok(v) = state.get(&format!("param.{}", p.name)) {
            p.value.write(b.gpu, &v.values)?;
        }
        if let Ok(v) = state.get(&format!("velocity.{}", p.name)) {
            p.velocity = Some(b.upload(&v.values, &v.shape)?);
        }
    }
    if let (Some(t), Ok(v)) = (b.loss_scale(), state.get(LOSS_SCALE)) {
        t.write(b.gpu, &v.values)?;
    }
    Ok(net)
}

/// Saves the optimiser state after `epochs_done` epochs.
pub fn save<'g>(
    out: &Path,
    net: &Net<GpuBackend<'g>>,
    b: &mut GpuBackend<'g>,
    epochs_done: usize,
    best: (usize, f64),
    metrics: &[EpochMetrics],
) -> Result<()> {
    let mut tensors = BTreeMap::new();
    for p in &net.params.params {
        tensors
            .insert(format!("param.{}", p.name), Loaded { shape: p.value.shape.clone(), values: b.download(&p.value) });
        if let Some(v) = &p.velocity {
            tensors.insert(format!("velocity.{}", p.name), Loaded { shape: v.shape.clone(), values: b.download(v) });
        }
    }
    if let Some(t) = b.loss_scale().cloned() {
        tensors.insert(LOSS_SCALE.to_string(), Loaded { shape: t.shape.clone(), values: b.download(&t) });
    }
    let meta = HashMap::from([
        ("epochs_done".to_string(), epochs_done.to_string()),
        ("best_epoch".to_string(), best.0.to_string()),
        ("best_val_loss".to_string(), best.1.to_string()),
        ("metrics".to_string(), serde_json::to_string(metrics)?),
    ]);
    write_atomic(&out.join(STATE), &tensors, meta)
}
