//! What a run folder keeps so that `--resume` continues exactly where a run
//! stopped: the options (`config.json`), the split (`split.csv`), the
//! metrics so far, the last checkpoint and the optimiser state (momentum
//! buffers, epochs done, the best epoch so far).

use super::{TrainConfig, CONFIG, LAST, SPLIT, STATE};
use crate::data::dataset::Dataset;
use crate::data::split::{self, Split};
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
pub fn fresh(out: &Path, cfg: &TrainConfig, data: &Dataset) -> Result<Start> {
    let split = split::stratified(data, cfg.seed);
    split.write_csv(&out.join(SPLIT), &data.people)?;
    std::fs::write(out.join(CONFIG), serde_json::to_string_pretty(cfg)?)?;
    Ok(Start { split, metrics: Vec::new(), epoch: 0, best: (0, f64::INFINITY) })
}

/// The stopped run in `out`, whose options must equal `cfg` but for `epochs`.
pub fn resume(out: &Path, cfg: &TrainConfig) -> Result<Start> {
    let saved = super::saved_config(out)?;
    if (TrainConfig { epochs: cfg.epochs, data: cfg.data.clone(), ..saved.clone() }) != *cfg {
        bail!("--resume: the options differ from the run in {} (only --epochs may change)", out.display());
    }
    let (split, _) = Split::read_csv(&out.join(SPLIT))?;
    let metrics: Vec<EpochMetrics> = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json"))?)?;
    let state = TensorFile::read(&out.join(STATE))?;
    let num = |k: &str| -> Result<String> { state.metadata.get(k).cloned().with_context(|| format!("state: no {k}")) };
    let best = (num("best_epoch")?.parse()?, num("best_val_loss")?.parse()?);
    Ok(Start { split, metrics, epoch: num("epochs_done")?.parse()?, best })
}

/// The last checkpoint of the run in `out` with its momentum buffers.
pub fn resumed_net<'g>(out: &Path, b: &mut GpuBackend<'g>) -> Result<Net<GpuBackend<'g>>> {
    let (mut net, _) = checkpoint::load(&out.join(LAST), b)?;
    let state = TensorFile::read(&out.join(STATE))?;
    for p in &mut net.params.params {
        if let Ok(v) = state.get(&format!("velocity.{}", p.name)) {
            p.velocity = Some(b.upload(&v.values, &v.shape)?);
        }
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
) -> Result<()> {
    let mut tensors = BTreeMap::new();
    for p in &net.params.params {
        if let Some(v) = &p.velocity {
            tensors.insert(format!("velocity.{}", p.name), Loaded { shape: v.shape.clone(), values: b.download(v) });
        }
    }
    let meta = HashMap::from([
        ("epochs_done".to_string(), epochs_done.to_string()),
        ("best_epoch".to_string(), best.0.to_string()),
        ("best_val_loss".to_string(), best.1.to_string()),
    ]);
    write_atomic(&out.join(STATE), &tensors, meta)
}
