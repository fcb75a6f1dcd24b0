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
    /// Verification sets evaluated after the epoch (`--val-bin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification: Vec<Verification>,
}

/// A verification set's 10-fold accuracy with flip (insightface's way).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub name: String,
    pub accuracy: f64,
    pub accuracy_std: f64,
}

pub fn write_metrics(out: &Path, metrics: &[EpochMetrics]) -> Result<()> {
    let mut header: Vec<String> =
        ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "images_per_second"]
            .map(String::from)
            .to_vec();
    // A column pair per verification set (the sets are the same every epoch).
    let sets: Vec<String> = metrics.first().map_or(vec![], |m| m.verification.iter().map(|v| v.name.clone()).collect());
    for s in &sets {
        header.extend([format!("{s}_accuracy"), format!("{s}_accuracy_std")]);
    }
    let mut rows = vec![header];
    for m in metrics {
        let mut row = vec![
            m.epoch.to_string(),
            m.lr.to_string(),
            format!("{:.6}", m.train_loss),
            format!("{:.6}", m.train_accuracy),
            format!("{:.6}", m.val_loss),
            format!("{:.6}", m.val_accuracy),
            format!("{:.3}", m.images_per_second),
        ];
        for v in &m.verification {
            row.extend([format!("{:.6}", v.accuracy), format!("{:.6}", v.accuracy_std)]);
        }
        rows.push(row);
    }
    csv_file::write(&out.join("metrics.csv"), &rows)?;
    atomic_file::write(&out.join("metrics.json"), serde_json::to_string_pretty(metrics)?.as_bytes())?;
    atomic_file::write_png(&out.join("curves.png"), &curves(metrics)?)
}

/// Loss and accuracy against the epoch, the lowest validation loss marked.
pub fn curves(metrics: &[EpochMetrics]) -> Result<RgbImage> {
    let get = |f: fn(&EpochMetrics) -> f64| metrics.iter().map(f).collect::<Vec<_>>();
    let best = metrics.iter().filter(|m| m.val_loss.is_finite()).min_by(|a, b| a.val_loss.total_cmp(&b.val_loss));
    let names: Vec<String> =
        metrics.first().map_or(vec![], |m| m.verification.iter().map(|v| v.name.clone()).collect());
    let sets: Vec<(String, Vec<f64>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                format!("{n} (verification)"),
                metrics.iter().map(|m| m.verification.get(i).map_or(f64::NAN, |v| v.accuracy)).collect(),
            )
        })
        .collect();
    crate::plot::curves(&crate::plot::Curves {
        train_loss: &get(|m| m.train_loss),
        val_loss: &get(|m| m.val_loss),
        train_accuracy: &get(|m| m.train_accuracy),
        val_accuracy: &get(|m| m.val_accuracy),
        sets: &sets,
        best_epoch: best.map_or(0, |m| m.epoch),
    })
}
