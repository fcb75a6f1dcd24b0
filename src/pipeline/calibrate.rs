//! `arcface calibrate`: a classifier's open-set threshold computed again on
//! its run's validation split and written into the checkpoint (for
//! checkpoints trained before the threshold was recorded, or after moving
//! the photos). Training records it by itself.

use super::scoring::eval_logits;
use super::train::{open_set, SPLIT};
use crate::data::split::Split;
use crate::gpu::Gpu;
use crate::io::checkpoint::{self, OpenSet};
use crate::nn::GpuBackend;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Calibrates `ckpt` on the validation part of `split` (default: the run's
/// split.csv beside it) and rewrites it with the threshold.
pub fn run(gpu: &Gpu, ckpt: &Path, split: Option<&Path>) -> Result<OpenSet> {
    let run_dir = ckpt.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let split_path = split.map_or_else(|| run_dir.join(SPLIT), Path::to_path_buf);
    let (split, _) = Split::read_csv(&split_path).context("calibrate needs the run's split (--split)")?;
    if split.val.is_empty() {
        bail!("{}: no validation photos to calibrate on", split_path.display());
    }
    let mut b = GpuBackend::new(gpu)?;
    let (mut net, mut meta) = checkpoint::load(ckpt, &mut b)?;
    let logits = eval_logits(&mut b, &mut net, &split.val, &meta.normalization, 16, false)?;
    let labels: Vec<usize> = split.val.iter().map(|s| s.label).collect();
    let Some(o) = open_set(&logits, &labels, &meta.model) else {
        bail!("{}: only ArcFace classifiers have an open-set threshold (class centres)", ckpt.display());
    };
    meta.open_set = Some(o.clone());
    checkpoint::save(ckpt, &mut b, &net, &meta)?;
    Ok(o)
}
