//! `train --align`: whole photos detected and aligned before training.

use crate::detect::{prepare, Detector, Options};
use crate::gpu::Gpu;
use crate::progress::Progress;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The photos of `data` detected and aligned into `RUN/aligned` (kept on
/// `--resume`, so the photos are not detected again); the folder to train on.
pub fn aligned_data(
    gpu: &Gpu,
    data: &Path,
    out: &Path,
    resume: bool,
    mtcnn: Option<&Path>,
    opt: Options,
    progress: &Progress,
) -> Result<PathBuf> {
    let aligned = out.join("aligned");
    if !(resume && aligned.join("labels.csv").is_file()) {
        let mut d = Detector::open(gpu, mtcnn, opt)?;
        let r = prepare::run(&mut d, data, &aligned, progress)?;
        for p in &r.no_face {
            eprintln!("no face found, skipped: {}", p.display());
        }
        eprintln!("{} of {} photos aligned into {}", r.written, r.photos, aligned.display());
    }
    Ok(aligned)
}
