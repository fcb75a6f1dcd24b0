//! Run reports: metrics as CSV and JSON, learning curves as PNG.

use crate::data::{atomic_file, csv_file};
use anyhow::Result;
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
    let mut rows =
        vec![["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "images_per_second"]
            .map(String::from)];
    for m in metrics {
        rows.push([
            m.epoch.to_string(),
            m.lr.to_string(),
            format!("{:.6}", m.train_loss),
            format!("{:.6}", m.train_accuracy),
            format!("{:.6}", m.val_loss),
            format!("{:.6}", m.val_accuracy),
            format!("{:.3}", m.images_per_second),
        ]);
    }
    csv_file::write(&out.join("metrics.csv"), &rows)?;
    atomic_file::write(&out.join("metrics.json"), serde_json::to_string_pretty(metrics)?.as_bytes())?;
    atomic_file::write_png(&out.join("curves.png"), &curves(metrics)?)
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
