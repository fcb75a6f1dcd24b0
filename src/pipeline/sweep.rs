//! `arcface sweep`: one training run per (learning rate, momentum) pair,
//! a table of the outcomes, and the model with the lowest validation loss
//! copied to `best.safetensors`. A diverged pair is recorded, not fatal.

use super::train::{self, TrainConfig, BEST};
use crate::gpu::Gpu;
use crate::progress::Progress;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

#[derive(Serialize, Debug, Clone)]
pub struct SweepRow {
    pub lr: f32,
    pub momentum: f32,
    pub best_val_loss: f64,
    pub best_epoch: usize,
    pub val_accuracy: f64,
    pub diverged: bool,
    pub run: String,
}

/// The pair with the lowest finite validation loss.
pub fn best(rows: &[SweepRow]) -> Option<&SweepRow> {
    rows.iter().filter(|r| r.best_val_loss.is_finite()).min_by(|a, b| a.best_val_loss.total_cmp(&b.best_val_loss))
}

pub fn run(
    gpu: &Gpu,
    data: &Path,
    out: &Path,
    base: &TrainConfig,
    lrs: &[f32],
    momentums: &[f32],
    progress: &Progress,
) -> Result<Vec<SweepRow>> {
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut rows = Vec::new();
    for &lr in lrs {
        for &momentum in momentums {
            let dir = out.join(format!("lr{lr:e}_m{momentum}"));
            progress.line(&format!("== lr {lr:e}, momentum {momentum}"));
            let cfg = TrainConfig { lr, momentum, ..base.clone() };
            let o = train::run(gpu, data, &dir, cfg, false, progress)?;
            let best = o.metrics.iter().find(|m| m.epoch == o.best_epoch);
            rows.push(SweepRow {
                lr,
                momentum,
                best_val_loss: o.best_val_loss,
                best_epoch: o.best_epoch,
                val_accuracy: best.map_or(0.0, |m| m.val_accuracy),
                diverged: o.diverged.is_some(),
                run: dir.display().to_string(),
            });
            std::fs::write(out.join("sweep.json"), serde_json::to_string_pretty(&rows)?)?;
        }
    }
    if let Some(best) = best(&rows) {
        let from = Path::new(&best.run).join(BEST);
        std::fs::copy(&from, out.join(BEST)).with_context(|| format!("copying {}", from.display()))?;
        std::fs::copy(Path::new(&best.run).join(train::SPLIT), out.join(train::SPLIT))?;
    }
    Ok(rows)
}
