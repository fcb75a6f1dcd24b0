//! Images to model inputs: decode (any format the `image` crate reads, grey,
//! RGBA and 16-bit converted to 8-bit RGB), resize to the model's input with
//! bilinear filtering, scale to [0, 1] and normalise per channel, CHW order.
//! Training, evaluation, `embed` and `predict` all go through here.

use crate::checkpoint::Normalization;
use anyhow::{Context, Result};
use std::path::Path;

/// Decodes an image file; the error names the file and why it is unreadable.
pub fn open_rgb(path: &Path) -> Result<image::RgbImage> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", path.display()))?
        .decode()
        .with_context(|| format!("{}: not a readable image", path.display()))?;
    Ok(img.to_rgb8())
}

/// (3, size, size) normalised values of an RGB image (resize + normalise).
pub fn to_input(img: &image::RgbImage, size: usize, norm: &Normalization) -> Vec<f32> {
    crate::data::augment::evaluate(img, size, norm)
}

pub fn load_input(path: &Path, size: usize, norm: &Normalization) -> Result<Vec<f32>> {
    Ok(to_input(&open_rgb(path)?, size, norm))
}
