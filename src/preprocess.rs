//! Images to model inputs: decode (any format the `image` crate reads, grey,
//! RGBA and 16-bit converted to 8-bit RGB), resize to the model's input with
//! bilinear filtering, scale to [0, 1] and normalise per channel, CHW order.
//! Training, evaluation, `embed` and `predict` all go through here.

use crate::checkpoint::Normalization;
use anyhow::{Context, Result};
use image::imageops::FilterType;
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

/// (3, size, size) normalised values of an RGB image.
pub fn to_input(img: &image::RgbImage, size: usize, norm: &Normalization) -> Vec<f32> {
    let resized = image::imageops::resize(img, size as u32, size as u32, FilterType::Triangle);
    let mut out = vec![0.0f32; 3 * size * size];
    for (x, y, px) in resized.enumerate_pixels() {
        for c in 0..3 {
            let v = px[c] as f32 / 255.0;
            out[(c * size + y as usize) * size + x as usize] = (v - norm.mean[c]) / norm.std[c];
        }
    }
    out
}

pub fn load_input(path: &Path, size: usize, norm: &Normalization) -> Result<Vec<f32>> {
    Ok(to_input(&open_rgb(path)?, size, norm))
}
