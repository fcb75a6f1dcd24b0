//! Run reports: metrics as CSV and JSON, learning curves as PNG.

use anyhow::{Context, Result};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::Path;

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

pub fn write_metrics(out: &Path, metrics: &[EpochMetrics]) -> Result<()> {
    let mut csv = String::from("epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy,images_per_second\n");
    for m in metrics {
        csv.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.3}\n",
            m.epoch, m.lr, m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy, m.images_per_second
        ));
    }
    let write = |name: &str, text: String| -> Result<()> {
        let tmp = out.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("{}: cannot write", tmp.display()))?;
        std::fs::rename(&tmp, out.join(name)).with_context(|| format!("{}: cannot write", out.join(name).display()))
    };
    write("metrics.csv", csv)?;
    write("metrics.json", serde_json::to_string_pretty(metrics)?)?;
    curves(metrics)?
        .save(out.join("curves.png"))
        .with_context(|| format!("{}: cannot write curves.png", out.display()))?;
    Ok(())
}

/// Loss and accuracy against the epoch, the lowest validation loss marked.
pub fn curves(metrics: &[EpochMetrics]) -> Result<RgbImage> {
    let get = |f: fn(&EpochMetrics) -> f64| metrics.iter().map(f).collect::<Vec<_>>();
    let best = metrics.iter().filter(|m| m.val_loss.is_finite()).min_by(|a, b| a.val_loss.total_cmp(&b.val_loss));
    crate::plot::curves(&crate::plot::Curves {
        train_loss: &get(|m| m.train_loss),
        val_loss: &get(|m| m.val_loss),
        train_accuracy: &get(|m| m.train_accuracy),
        val_accuracy: &get(|m| m.val_accuracy),
        best_epoch: best.map_or(0, |m| m.epoch),
    })
}
