//! Photos from untrusted bytes with bounded work: the header's dimensions
//! are read first and a photo over the pixel limit is refused before any
//! pixel is decoded (a 389 KB PNG can hold 20000 x 20000 zeros: 400 MB
//! decoded, and minutes of face detection); the decoder runs with the same
//! limits, and a photo that passes can be scaled down to a longest side
//! before detection, as face pipelines do.

use image::{ImageReader, Limits, RgbImage};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};

/// 40 megapixels: any camera photo, no decompression bomb.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// The longest side of the photo face detection searches (larger ones are
/// scaled down to it first).
pub const DETECT_MAX_SIDE: u32 = 2000;

static MAX_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_PIXELS);

/// The pixel limit of this process (`--max-pixels`).
pub fn max_pixels() -> u64 {
    MAX_PIXELS.load(Ordering::Relaxed)
}

pub fn set_max_pixels(n: u64) {
    MAX_PIXELS.store(n.max(1), Ordering::Relaxed);
}

/// Why bytes are not a photo we take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhotoError {
    /// With the decoder's reason where it gave one.
    NotAnImage(String),
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
}

impl std::fmt::Display for PhotoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PhotoError::NotAnImage(why) if why.is_empty() => write!(f, "not an image (PNG, JPEG, BMP or PNM)"),
            PhotoError::NotAnImage(why) => write!(f, "not an image (PNG, JPEG, BMP or PNM): {why}"),
            PhotoError::TooLarge { width, height, max_pixels } => write!(
                f,
                "{width} x {height} pixels ({:.1} megapixels) is over the limit of {:.1} megapixels (--max-pixels {max_pixels})",
                *width as f64 * *height as f64 / 1e6,
                *max_pixels as f64 / 1e6
            ),
        }
    }
}

impl std::error::Error for PhotoError {}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, PhotoError> {
    ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| PhotoError::NotAnImage(e.to_string()))
}

/// The photo's width and height from its header alone, refused when empty,
/// not an image or over `max_pixels` pixels.
pub fn dimensions(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32), PhotoError> {
    if bytes.is_empty() {
        return Err(PhotoError::NotAnImage("the file is empty".into()));
    }
    let (width, height) = reader(bytes)?.into_dimensions().map_err(|e| PhotoError::NotAnImage(e.to_string()))?;
    if width as u64 * height as u64 > max_pixels {
        return Err(PhotoError::TooLarge { width, height, max_pixels });
    }
    Ok((width, height))
}

/// Decodes `bytes` to 8-bit RGB, refusing more than `max_pixels` pixels
/// from the header alone.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, PhotoError> {
    let (width, height) = dimensions(bytes, max_pixels)?;
    let mut r = reader(bytes)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // The decoded image at 16 bits per channel with alpha, and the RGB copy.
    limits.max_alloc = Some(max_pixels * 8 + max_pixels * 3 + (1 << 20));
    r.limits(limits);
    r.decode().map(|img| img.into_rgb8()).map_err(|e| PhotoError::NotAnImage(e.to_string()))
}

/// The size `fit` gives a `w` x `h` photo.
pub fn fitted_size(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    if w.max(h) <= max_side {
        return (w, h);
    }
    let scale = max_side as f64 / w.max(h) as f64;
    (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1))
}

/// `img` with its longest side at most `max_side`, or as it is. Each
/// output pixel averages the input pixels it covers (`thumbnail`): no
/// aliasing however large the factor, and no intermediate image (a bilinear
/// resize of a 30-megapixel photo holds 160 MB of floats).
pub fn fit(img: RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    match fitted_size(w, h, max_side) {
        (nw, nh) if (nw, nh) == (w, h) => img,
        (nw, nh) => image::imageops::thumbnail(&img, nw, nh),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of `w` x `h` grey zeros.
    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let img = image::GrayImage::new(w, h);
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn a_bomb_is_refused_from_its_header_in_milliseconds() {
        let png = include_bytes!("../../tests/fixtures/bomb-20000x20000.png");
        assert!(png.len() < 400_000, "{} bytes", png.len());
        let started = std::time::Instant::now();
        let e = decode(png, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(started.elapsed().as_millis() < 500, "{:?}", started.elapsed());
        assert_eq!(e, PhotoError::TooLarge { width: 20_000, height: 20_000, max_pixels: DEFAULT_MAX_PIXELS });
        assert!(e.to_string().contains("400.0 megapixels") && e.to_string().contains("--max-pixels"), "{e}");
    }

    #[test]
    fn photos_under_the_limit_decode_and_fit() {
        let img = decode(&png(3000, 1000), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(fit(img, DETECT_MAX_SIDE).dimensions(), (2000, 667));
        assert!(matches!(decode(b"not a photo", DEFAULT_MAX_PIXELS), Err(PhotoError::NotAnImage(_))));
        assert!(decode(b"", DEFAULT_MAX_PIXELS).unwrap_err().to_string().contains("empty"));
    }
}
