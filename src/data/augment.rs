//! Training augmentation, as the original recipe: resize to the model's
//! input, horizontal flip with p = 0.5, rotation by a uniform angle in
//! [-10, 10] degrees (counter-clockwise positive, black fill, bilinear, as
//! torchvision's RandomRotation), then ImageNet normalisation. Evaluation
//! only resizes and normalises (`image::to_input`).

use super::input::{flip_horizontal, normalize, to_unit_chw, Normalization};
use rand::Rng;

pub const MAX_ROTATION_DEGREES: f32 = 10.0;
pub const FLIP_PROBABILITY: f64 = 0.5;

/// Rotates counter-clockwise by `degrees` about the centre; pixels that come
/// from outside the image are black.
pub fn rotate(chw: &[f32], size: usize, degrees: f32) -> Vec<f32> {
    let (s, c) = degrees.to_radians().sin_cos();
    let mid = (size as f32 - 1.0) / 2.0;
    let mut out = vec![0.0; chw.len()];
    for y in 0..size {
        for x in 0..size {
            // Inverse map: the source of output (x, y) is rotated by -degrees.
            let (dx, dy) = (x as f32 - mid, y as f32 - mid);
            let sx = mid + dx * c - dy * s;
            let sy = mid + dx * s + dy * c;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            for ch in 0..3 {
                let at = |xx: f32, yy: f32| -> f32 {
                    if xx < 0.0 || yy < 0.0 || xx > size as f32 - 1.0 || yy > size as f32 - 1.0 {
                        0.0
                    } else {
                        chw[(ch * size + yy as usize) * size + xx as usize]
                    }
                };
                let v = at(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + at(x0 + 1.0, y0) * fx * (1.0 - fy)
                    + at(x0, y0 + 1.0) * (1.0 - fx) * fy
                    + at(x0 + 1.0, y0 + 1.0) * fx * fy;
                out[(ch * size + y) * size + x] = v;
            }
        }
    }
    out
}

/// What one image's augmentation does, drawn before the image is read, so
/// that images can be augmented on any thread in any order and still get
/// what a seeded generator drew for them in the batch order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    pub flip: bool,
    pub degrees: f32,
}

impl Draw {
    pub fn new(rng: &mut impl Rng) -> Draw {
        let flip = rng.random_bool(FLIP_PROBABILITY);
        Draw { flip, degrees: rng.random_range(-MAX_ROTATION_DEGREES..=MAX_ROTATION_DEGREES) }
    }
}

/// One augmented training input.
pub fn apply(img: &image::RgbImage, d: Draw, size: usize, norm: &Normalization) -> Vec<f32> {
    let mut x = to_unit_chw(img, size);
    if d.flip {
        x = flip_horizontal(&x, size);
    }
    x = rotate(&x, size, d.degrees);
    normalize(&mut x, size, norm);
    x
}

/// One augmented training input, drawn from `rng`.
pub fn augment(img: &image::RgbImage, size: usize, norm: &Normalization, rng: &mut impl Rng) -> Vec<f32> {
    apply(img, Draw::new(rng), size, norm)
}
