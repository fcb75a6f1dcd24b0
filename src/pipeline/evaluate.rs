//! `arcface eval`: a checkpoint on the test split saved with its run: loss,
//! accuracy, per-person accuracy and the confusion matrix (text and PNG).

use super::scoring::{argmax, eval_logits, score};
use super::train::SPLIT;
use crate::data::split::Split;
use crate::gpu::Gpu;
use crate::io::checkpoint;
use crate::nn::GpuBackend;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

#[derive(Serialize, Debug)]
pub struct PersonResult {
    pub person: String,
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
}

/// A test photo the model named wrong.
#[derive(Serialize, Debug)]
pub struct Miss {
    pub path: std::path::PathBuf,
    pub person: String,
    pub predicted: String,
}

#[derive(Serialize, Debug)]
pub struct EvalReport {
    pub checkpoint: String,
    pub images: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub per_person: Vec<PersonResult>,
    /// Rows: true person; columns: predicted person (label order).
    pub confusion: Vec<Vec<usize>>,
    pub confusion_png: String,
    /// The test photos named wrong, in split order.
    pub misclassified: Vec<Miss>,
}

/// Evaluates on the run's test split. With `data`, the images are looked up
/// under that folder (person/file, or the same record of the RecordIO set
/// there) instead of where training found them.
/// With `batch_stats`, batch norm uses the test batch's statistics instead
/// of the running ones (a diagnostic; the whole test set is one batch).
pub fn run(gpu: &Gpu, ckpt: &Path, data: Option<&Path>, batch_stats: bool) -> Result<EvalReport> {
    let run_dir = ckpt.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let split_path = run_dir.join(SPLIT);
    let (split, _) = Split::read_csv(&split_path)
        .with_context(|| format!("eval needs the split saved with the run ({} next to the checkpoint)", SPLIT))?;
    if split.test.is_empty() {
        anyhow::bail!(
            "{}: the run has no test photos (trained with --no-test, or too few photos per person): nothing to \
             evaluate",
            split_path.display()
        );
    }
    let mut b = GpuBackend::new(gpu)?;
    let (mut net, meta) = checkpoint::load(ckpt, &mut b)?;
    let mut test = split.test.clone();
    if let Some(root) = data {
        for s in &mut test {
            let file = s.path.file_name().context("a split path without a file name")?;
            s.path = match crate::data::container::address(&s.path) {
                // A record of a RecordIO set: the same record of the set at `root`.
                Some((_, n)) => {
                    let rec = crate::data::dataset::record_file(root)
                        .unwrap_or_else(|| root.join(Path::new(file).with_extension("rec")));
                    crate::data::container::image_path(&rec, n)
                }
                None => root.join(&meta.classes[s.label]).join(file),
            };
        }
    }
    let c = meta.classes.len();
    let batch = if batch_stats { test.len() } else { 16 };
    let logits = eval_logits(&mut b, &mut net, &test, &meta.normalization, batch, batch_stats)?;
    let labels: Vec<usize> = test.iter().map(|s| s.label).collect();
    let (loss, correct) = score(&logits, &labels, c);
    let mut confusion = vec![vec![0usize; c]; c];
    let mut misclassified = Vec::new();
    for ((row, &y), s) in logits.chunks(c).zip(&labels).zip(&test) {
        let p = argmax(row);
        confusion[y][p] += 1;
        if p != y {
            let (person, predicted) = (meta.classes[y].clone(), meta.classes[p].clone());
            misclassified.push(Miss { path: s.path.clone(), person, predicted });
        }
    }
    let per_person = meta
        .classes
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let total: usize = confusion[i].iter().sum();
            let correct = confusion[i][i];
            PersonResult { person: name.clone(), correct, total, accuracy: correct as f64 / total.max(1) as f64 }
        })
        .collect();
    let png = run_dir.join("confusion.png");
    crate::plot::confusion(&meta.classes, &confusion)?
        .save(&png)
        .with_context(|| format!("{}: cannot write", png.display()))?;
    Ok(EvalReport {
        checkpoint: ckpt.display().to_string(),
        images: labels.len(),
        loss,
        accuracy: correct as f64 / labels.len().max(1) as f64,
        per_person,
        confusion,
        confusion_png: png.display().to_string(),
        misclassified,
    })
}
