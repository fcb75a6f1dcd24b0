//! Run reports: metrics as CSV and JSON, learning curves and confusion
//! matrices as PNG (drawn directly: no plotting library).

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
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

pub const TRAIN_COLOUR: Rgb<u8> = Rgb([31, 119, 180]);
pub const VAL_COLOUR: Rgb<u8> = Rgb([255, 127, 14]);

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
    curves(metrics)
        .save(out.join("curves.png"))
        .with_context(|| format!("{}: cannot write curves.png", out.display()))?;
    Ok(())
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for i in 0..=steps {
        let x = x0 + (x1 - x0) * i / steps;
        let y = y0 + (y1 - y0) * i / steps;
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            if let Some(p) = img.get_pixel_mut_checked((x + dx) as u32, (y + dy) as u32) {
                *p = c;
            }
        }
    }
}

/// One panel: axes, horizontal grid at quarters, one polyline per series
/// (values scaled to [0, max]).
fn panel(img: &mut RgbImage, left: u32, w: u32, h: u32, series: &[(Vec<f64>, Rgb<u8>)], max: f64) {
    let (x0, y0, x1, y1) = (left as i64 + 40, 20i64, (left + w) as i64 - 20, h as i64 - 30);
    let grey = Rgb([220, 220, 220]);
    for q in 0..=4 {
        let y = y1 - (y1 - y0) * q / 4;
        line(img, (x0, y), (x1, y), grey);
    }
    line(img, (x0, y0), (x0, y1), Rgb([0, 0, 0]));
    line(img, (x0, y1), (x1, y1), Rgb([0, 0, 0]));
    for (values, colour) in series {
        let n = values.len();
        let pt = |i: usize, v: f64| {
            let x = if n > 1 { x0 + (x1 - x0) * i as i64 / (n as i64 - 1) } else { (x0 + x1) / 2 };
            let y = y1 - ((v.clamp(0.0, max) / max) * (y1 - y0) as f64) as i64;
            (x, y)
        };
        for i in 1..n {
            line(img, pt(i - 1, values[i - 1]), pt(i, values[i]), *colour);
        }
        if n == 1 {
            let p = pt(0, values[0]);
            line(img, p, (p.0 + 2, p.1), *colour);
        }
    }
}

/// Left: loss (0 to the largest loss seen); right: accuracy (0 to 1).
/// Training in blue, validation in orange; x is the epoch.
pub fn curves(metrics: &[EpochMetrics]) -> RgbImage {
    let (w, h) = (400, 300);
    let mut img = RgbImage::from_pixel(2 * w, h, Rgb([255, 255, 255]));
    let get = |f: fn(&EpochMetrics) -> f64| metrics.iter().map(f).collect::<Vec<_>>();
    let losses = [get(|m| m.train_loss), get(|m| m.val_loss)];
    let max_loss = losses.iter().flatten().cloned().filter(|v| v.is_finite()).fold(1e-9, f64::max);
    panel(&mut img, 0, w, h, &[(losses[0].clone(), TRAIN_COLOUR), (losses[1].clone(), VAL_COLOUR)], max_loss);
    let acc = [(get(|m| m.train_accuracy), TRAIN_COLOUR), (get(|m| m.val_accuracy), VAL_COLOUR)];
    panel(&mut img, w, w, h, &acc, 1.0);
    img
}

/// Rows are true people, columns predicted; a cell's darkness is its share
/// of the row.
pub fn confusion_png(matrix: &[Vec<usize>]) -> RgbImage {
    let n = matrix.len().max(1);
    let cell = (600 / n as u32).clamp(4, 40);
    let mut img = RgbImage::from_pixel(cell * n as u32, cell * n as u32, Rgb([255, 255, 255]));
    for (r, row) in matrix.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (c, &v) in row.iter().enumerate() {
            let share = if total > 0 { v as f64 / total as f64 } else { 0.0 };
            let shade = (255.0 * (1.0 - share)) as u8;
            let colour = if r == c { Rgb([shade, shade, 255]) } else { Rgb([255, shade, shade]) };
            for y in 0..cell {
                for x in 0..cell {
                    img.put_pixel(c as u32 * cell + x, r as u32 * cell + y, colour);
                }
            }
        }
    }
    img
}
