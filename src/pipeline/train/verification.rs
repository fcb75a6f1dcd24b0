//! Verification sets evaluated after each epoch (`train --val-bin`): the
//! 10-fold accuracy with flip of insightface's `verification.py` on
//! `lfw.bin`, `cfp_fp.bin`, ... with the epoch's weights, as arcface_torch
//! reports during its training.

use crate::data::dataset::Sample;
use crate::data::input::{flip_horizontal, Normalization};
use crate::data::{container, loader, verification_bin};
use crate::models::Net;
use crate::nn::{Backend, GpuBackend};
use crate::pipeline::report::Verification;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A verification set: its images as samples (addresses `FILE.bin#i`) and
/// the pairs' flags.
pub struct ValSet {
    pub name: String,
    images: Vec<Sample>,
    same: Vec<bool>,
}

/// Opens every set (their structure; the images are read each epoch), so
/// that a bad file stops the run before anything is written.
pub fn open(paths: &[PathBuf]) -> Result<Vec<ValSet>> {
    paths
        .iter()
        .map(|p| {
            let set = verification_bin::open(p).with_context(|| format!("--val-bin {}", p.display()))?;
            let images =
                (0..set.images.len()).map(|i| Sample { path: container::image_path(p, i as u64), label: 0 }).collect();
            Ok(ValSet { name: name_of(p), images, same: set.same })
        })
        .collect()
}

/// `lfw` for `.../lfw.bin`.
fn name_of(p: &Path) -> String {
    p.file_stem().map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into_owned())
}

/// The set's accuracy with the network's current weights: each image's
/// embedding plus its mirror image's, normalised, the pairs scored by
/// cosine, then `verification_bin::fold_accuracy`.
pub fn evaluate<'g>(
    b: &mut GpuBackend<'g>,
    net: &mut Net<GpuBackend<'g>>,
    set: &ValSet,
    norm: &Normalization,
    batch: usize,
) -> Result<Verification> {
    let size = net.spec.input;
    let mut embeddings: Vec<Vec<f32>> = Vec::with_capacity(set.images.len());
    loader::evaluation_batches(&set.images, batch, size, norm, loader::threads(0), |loaded| {
        if let Some((_, why)) = loaded.failed.first() {
            bail!("{why}");
        }
        let n = loaded.batch.len();
        let mut x = loaded.batch.x.clone();
        let per = 3 * size * size;
        for i in 0..n {
            x.extend(flip_horizontal(&loaded.batch.x[i * per..(i + 1) * per], size));
        }
        let xt = b.upload(&x, &[2 * n, 3, size, size])?;
        let e = net.embed_raw(b, &xt)?;
        let v = b.download(&e);
        let d = v.len() / (2 * n);
        for i in 0..n {
            let mut row: Vec<f32> = (0..d).map(|k| v[i * d + k] + v[(n + i) * d + k]).collect();
            let norm = row.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|a| *a /= norm);
            embeddings.push(row);
        }
        Ok(true)
    })?;
    let pairs: Vec<(f64, bool)> = set
        .same
        .iter()
        .enumerate()
        .map(|(i, &same)| {
            let (a, c) = (&embeddings[2 * i], &embeddings[2 * i + 1]);
            (a.iter().zip(c).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum(), same)
        })
        .collect();
    let (accuracy, accuracy_std) = verification_bin::fold_accuracy(&pairs);
    Ok(Verification { name: set.name.clone(), accuracy, accuracy_std })
}
