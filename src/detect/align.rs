//! Face alignment: the similarity transform (rotation, uniform scale,
//! translation) that best maps the five detected landmarks onto the standard
//! 112x112 ArcFace template, in the weighted least-squares sense, and a
//! bilinear warp of the photo through it. Coordinates are pixel indices
//! (pixel (x, y)'s centre is at (x, y)), as MTCNN's landmarks and the
//! template use.
//!
//! Weights: the eyes count 10, nose and mouth corners 1. With equal weights
//! (insightface's fit) no similarity can put all five points on a template
//! that is not the person's own face, and the eyes absorb part of the misfit:
//! over the 120 London photos they landed up to 4.2 px (mean 1.6) from the
//! template eyes, and a smile, which moves the mouth corners, moves the eyes
//! of the crop. Weighting the eyes, the steadiest landmarks, puts them within
//! 1.4 px (mean 0.6) of the template on all 120; nose and mouth still set
//! the rotation and scale when the eyes are unsure. `EQUAL_WEIGHTS` gives
//! the standard fit.

use super::Face;
use image::{Rgb, RgbImage};

/// Side of the aligned crop.
pub const SIZE: u32 = 112;

/// Left eye, right eye, nose, left and right mouth corner in the 112x112 crop.
pub const TEMPLATE: [[f64; 2]; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

/// Left eye, right eye, nose, left and right mouth corner.
pub const WEIGHTS: [f64; 5] = [10.0, 10.0, 1.0, 1.0, 1.0];
/// insightface's (unweighted) fit.
pub const EQUAL_WEIGHTS: [f64; 5] = [1.0; 5];

/// x' = a x - b y + tx, y' = b x + a y + ty.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    /// Least squares over point pairs, each pair's squared error weighted:
    /// with both sets centred on their weighted means, a and b have a closed
    /// form (the 2-D Procrustes problem without reflection).
    pub fn fit(from: &[[f64; 2]], to: &[[f64; 2]], weights: &[f64]) -> Similarity {
        let n: f64 = weights.iter().sum();
        let mean = |p: &[[f64; 2]]| {
            let s = p.iter().zip(weights).fold([0.0, 0.0], |s, (q, w)| [s[0] + w * q[0], s[1] + w * q[1]]);
            [s[0] / n, s[1] / n]
        };
        let (mf, mt) = (mean(from), mean(to));
        let (mut num_a, mut num_b, mut den) = (0.0, 0.0, 0.0);
        for ((p, q), w) in from.iter().zip(to).zip(weights) {
            let (px, py) = (p[0] - mf[0], p[1] - mf[1]);
            let (qx, qy) = (q[0] - mt[0], q[1] - mt[1]);
            num_a += w * (px * qx + py * qy);
            num_b += w * (px * qy - py * qx);
            den += w * (px * px + py * py);
        }
        let (a, b) = if den > 0.0 { (num_a / den, num_b / den) } else { (1.0, 0.0) };
        Similarity { a, b, tx: mt[0] - (a * mf[0] - b * mf[1]), ty: mt[1] - (b * mf[0] + a * mf[1]) }
    }

    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [self.a * p[0] - self.b * p[1] + self.tx, self.b * p[0] + self.a * p[1] + self.ty]
    }

    pub fn inverse(&self) -> Similarity {
        let d = self.a * self.a + self.b * self.b;
        let (a, b) = (self.a / d, -self.b / d);
        Similarity { a, b, tx: -(a * self.tx - b * self.ty), ty: -(b * self.tx + a * self.ty) }
    }

    /// Scale factor and rotation (radians).
    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }
}

/// The transform from a detected face's landmarks to the template.
pub fn to_template(face: &Face) -> Similarity {
    let from: Vec<[f64; 2]> = face.landmarks.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    Similarity::fit(&from, &TEMPLATE, &WEIGHTS)
}

/// Bilinear sample; outside the photo is black.
fn sample(img: &RgbImage, x: f64, y: f64) -> Rgb<u8> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    let (fx, fy) = (x - x0 as f64, y - y0 as f64);
    let px = |xi: i64, yi: i64, c: usize| -> f64 {
        if xi < 0 || yi < 0 || xi >= w || yi >= h {
            0.0
        } else {
            img.get_pixel(xi as u32, yi as u32)[c] as f64
        }
    };
    Rgb(std::array::from_fn(|c| {
        let top = px(x0, y0, c) * (1.0 - fx) + px(x0 + 1, y0, c) * fx;
        let bottom = px(x0, y0 + 1, c) * (1.0 - fx) + px(x0 + 1, y0 + 1, c) * fx;
        (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8
    }))
}

/// The photo warped by `t` into a `SIZE` x `SIZE` crop.
pub fn warp(img: &RgbImage, t: &Similarity) -> RgbImage {
    let inv = t.inverse();
    RgbImage::from_fn(SIZE, SIZE, |u, v| {
        let [x, y] = inv.apply([u as f64, v as f64]);
        sample(img, x, y)
    })
}

/// The aligned 112x112 crop of a detected face.
pub fn align(img: &RgbImage, face: &Face) -> RgbImage {
    warp(img, &to_template(face))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_known_similarity() {
        let t = Similarity { a: 0.8, b: 0.3, tx: -12.0, ty: 40.0 };
        let from = [[10.0, 20.0], [50.0, 22.0], [33.0, 47.0], [15.0, 70.0], [48.0, 71.0]];
        let to: Vec<[f64; 2]> = from.iter().map(|&p| t.apply(p)).collect();
        let f = Similarity::fit(&from, &to, &WEIGHTS);
        for (x, y) in [(f.a, t.a), (f.b, t.b), (f.tx, t.tx), (f.ty, t.ty)] {
            assert!((x - y).abs() < 1e-9, "{f:?} != {t:?}");
        }
        let back = f.inverse().apply(f.apply([3.0, -7.0]));
        assert!((back[0] - 3.0).abs() < 1e-9 && (back[1] + 7.0).abs() < 1e-9);
        assert!((f.scale() - 0.8f64.hypot(0.3)).abs() < 1e-12);
    }

    #[test]
    fn fit_is_weighted_least_squares() {
        // Perturbing the fitted parameters can only increase the weighted residual.
        let from = [[0.0, 0.0], [10.0, 1.0], [5.0, 6.0], [1.0, 11.0], [9.0, 12.0]];
        let to = [[38.0, 52.0], [74.0, 51.0], [57.0, 73.0], [41.0, 92.0], [71.0, 93.0]];
        for weights in [WEIGHTS, EQUAL_WEIGHTS] {
            let f = Similarity::fit(&from, &to, &weights);
            let cost = |s: &Similarity| -> f64 {
                from.iter()
                    .zip(&to)
                    .zip(&weights)
                    .map(|((p, q), w)| w * ((s.apply(*p)[0] - q[0]).powi(2) + (s.apply(*p)[1] - q[1]).powi(2)))
                    .sum()
            };
            let c0 = cost(&f);
            for d in [[1e-3, 0.0, 0.0, 0.0], [0.0, 1e-3, 0.0, 0.0], [0.0, 0.0, 1e-2, 0.0], [0.0, 0.0, 0.0, -1e-2]] {
                for sign in [1.0, -1.0] {
                    let g = Similarity {
                        a: f.a + sign * d[0],
                        b: f.b + sign * d[1],
                        tx: f.tx + sign * d[2],
                        ty: f.ty + sign * d[3],
                    };
                    assert!(cost(&g) > c0);
                }
            }
        }
    }

    #[test]
    fn warp_moves_a_dot_to_its_image() {
        // A white 3x3 dot at (60, 40) in a black 100x80 photo.
        let mut img = RgbImage::new(100, 80);
        for y in 39..=41 {
            for x in 59..=61 {
                img.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        let t = Similarity { a: 0.9, b: -0.2, tx: 10.0, ty: 30.0 };
        let out = warp(&img, &t);
        let [u, v] = t.apply([60.0, 40.0]);
        // The brightest pixel of the crop is where the dot should land.
        let (mut best, mut at) = (0u8, (0u32, 0u32));
        for (x, y, p) in out.enumerate_pixels() {
            if p[0] > best {
                (best, at) = (p[0], (x, y));
            }
        }
        assert!(best > 200);
        assert!((at.0 as f64 - u).abs() <= 1.0 && (at.1 as f64 - v).abs() <= 1.0, "{at:?} vs ({u}, {v})");
        // Far outside the photo: black.
        assert_eq!(warp(&RgbImage::from_pixel(4, 4, Rgb([9, 9, 9])), &t).get_pixel(111, 111), &Rgb([0, 0, 0]));
    }
}
