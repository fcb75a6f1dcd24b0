//! `arcface detect --draw`: the photo with each face's box and landmarks, so a
//! person can check what was found.

use super::Face;
use image::{Rgb, RgbImage};

const BOX: Rgb<u8> = Rgb([0, 255, 0]);
const POINT: Rgb<u8> = Rgb([255, 0, 0]);

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Boxes two pixels wide (scaled up for large photos), landmarks as dots.
pub fn draw(img: &RgbImage, faces: &[Face]) -> RgbImage {
    let mut out = img.clone();
    let t = (img.width().max(img.height()) / 300).max(1) as i64 * 2;
    for f in faces {
        let [x1, y1, x2, y2] = f.bbox.map(|v| v.round() as i64);
        for d in 0..t {
            for x in x1..=x2 {
                put(&mut out, x, y1 + d, BOX);
                put(&mut out, x, y2 - d, BOX);
            }
            for y in y1..=y2 {
                put(&mut out, x1 + d, y, BOX);
                put(&mut out, x2 - d, y, BOX);
            }
        }
        for [px, py] in f.landmarks {
            let (px, py) = (px.round() as i64, py.round() as i64);
            for dy in -t..=t {
                for dx in -t..=t {
                    put(&mut out, px + dx, py + dy, POINT);
                }
            }
        }
    }
    out
}
