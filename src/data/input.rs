//! Images to model inputs: decode (any format the `image` crate reads, grey,
//! RGBA and 16-bit converted to 8-bit RGB), resize to the model's input with
//! bilinear filtering, scale to [0, 1] and normalise per channel, CHW order.
//! Training, evaluation, `embed` and `predict` all go through here.

use super::photo;
use anyhow::Result;
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// ImageNet statistics, as the training recipe normalises with.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Per-channel input normalisation: (value - mean) / std, values in [0, 1].
/// Stored with every checkpoint and imported graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Normalization {
    fn default() -> Self {
        Normalization { mean: MEAN, std: STD }
    }
}

/// What of a photo a model is shown: what it was trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// The largest face, detected (MTCNN) and aligned to the 112 x 112
    /// template: models trained with `--align` or on `arcface prepare`d
    /// crops, and imported embedding networks.
    AlignedFace,
    /// The whole photo, resized: models trained on photos of one fixed
    /// framing (ORL's faces).
    WholePhoto,
}

impl Framing {
    pub fn name(self) -> &'static str {
        match self {
            Framing::AlignedFace => "aligned faces",
            Framing::WholePhoto => "whole photos",
        }
    }
}

/// Decodes an image file (or an image in a container, `FILE.rec#N`,
/// `FILE.bin#N`: `container`), refusing one over the process's pixel limit
/// (`photo::max_pixels`) from its header; the error names the file and why
/// it is unreadable.
pub fn open_rgb(path: &Path) -> Result<image::RgbImage> {
    let bytes = match super::container::read(path) {
        Some(bytes) => bytes?,
        None => super::bounded::read(path, super::bounded::Kind::Input)?,
    };
    photo::decode(&bytes, photo::max_pixels()).map_err(|e| match e {
        photo::PhotoError::NotAnImage(why) => anyhow::anyhow!("{}: not a readable image: {why}", path.display()),
        e @ photo::PhotoError::Broken { .. } => anyhow::anyhow!("{}: not a readable image: {e}", path.display()),
        e => anyhow::anyhow!("{}: {e}", path.display()),
    })
}

/// `open_rgb` of each path, one thread per path: callers pass as many as
/// they want decoded images held at once (a core's worth).
pub fn open_rgb_each(paths: &[std::path::PathBuf]) -> Vec<Result<image::RgbImage>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = paths.iter().map(|p| s.spawn(move || open_rgb(p))).collect();
        handles.into_iter().map(|h| h.join().expect("a decoding thread panicked")).collect()
    })
}

/// How many images to decode at once: one per core.
pub fn decoders() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// (3, size, size) values in [0, 1], resized bilinearly.
pub fn to_unit_chw(img: &image::RgbImage, size: usize) -> Vec<f32> {
    let resized = image::imageops::resize(img, size as u32, size as u32, FilterType::Triangle);
    let mut out = vec![0.0f32; 3 * size * size];
    for (x, y, px) in resized.enumerate_pixels() {
        for c in 0..3 {
            out[(c * size + y as usize) * size + x as usize] = px[c] as f32 / 255.0;
        }
    }
    out
}

/// Mirror left-right.
pub fn flip_horizontal(chw: &[f32], size: usize) -> Vec<f32> {
    let mut out = vec![0.0; chw.len()];
    for c in 0..3 {
        for y in 0..size {
            for x in 0..size {
                out[(c * size + y) * size + x] = chw[(c * size + y) * size + (size - 1 - x)];
            }
        }
    }
    out
}

pub fn normalize(chw: &mut [f32], size: usize, norm: &Normalization) {
    for (i, v) in chw.iter_mut().enumerate() {
        let c = i / (size * size);
        *v = (*v - norm.mean[c]) / norm.std[c];
    }
}

/// (3, size, size) normalised values of an RGB image (resize + normalise):
/// the evaluation and inference input.
pub fn to_input(img: &image::RgbImage, size: usize, norm: &Normalization) -> Vec<f32> {
    let mut x = to_unit_chw(img, size);
    normalize(&mut x, size, norm);
    x
}

pub fn load_input(path: &Path, size: usize, norm: &Normalization) -> Result<Vec<f32>> {
    Ok(to_input(&open_rgb(path)?, size, norm))
}
