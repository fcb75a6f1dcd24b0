//! Photos from untrusted bytes with bounded work: the header's dimensions
//! are read first and a photo over the pixel limit is refused before any
//! pixel is decoded (a 389 KB PNG can hold 20000 x 20000 zeros: 400 MB
//! decoded, and minutes of face detection); the decoder runs with the same
//! limits, and a photo that passes can be scaled down to a longest side
//! before detection, as face pipelines do. Photos come upright: the EXIF
//! orientation a camera wrote (all eight values) is applied on decode, as
//! every photo viewer does, so faces are found and reported in the upright
//! photo's coordinates.

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
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
    /// No format we read, with the decoder's reason where it gave one.
    NotAnImage(String),
    /// A format we read (named), but the file is damaged: truncated, a
    /// header that contradicts itself, no pixels.
    Broken {
        format: &'static str,
        why: String,
    },
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
            PhotoError::Broken { format, why } => write!(f, "a damaged {format} file: {why}"),
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

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Pnm => "PNM",
        _ => "image",
    }
}

/// The decoder's complaint about bytes whose format was recognised
/// (`format`) or not.
fn failed(format: Option<ImageFormat>, e: impl std::fmt::Display) -> PhotoError {
    match format {
        Some(f) => PhotoError::Broken { format: format_name(f), why: e.to_string() },
        None => PhotoError::NotAnImage(e.to_string()),
    }
}

/// The photo's width and height from its header alone, refused when empty,
/// not an image or over `max_pixels` pixels.
pub fn dimensions(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32), PhotoError> {
    if bytes.is_empty() {
        return Err(PhotoError::NotAnImage("the file is empty".into()));
    }
    let r = reader(bytes)?;
    let format = r.format();
    let (width, height) = r.into_dimensions().map_err(|e| failed(format, e))?;
    if width == 0 || height == 0 {
        return Err(failed(format, format!("{width} x {height} pixels")));
    }
    if width as u64 * height as u64 > max_pixels {
        return Err(PhotoError::TooLarge { width, height, max_pixels });
    }
    Ok((width, height))
}

/// Decodes `bytes` to 8-bit RGB, upright (EXIF orientation applied),
/// refusing more than `max_pixels` pixels from the header alone.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, PhotoError> {
    let (width, height) = dimensions(bytes, max_pixels)?;
    let mut r = reader(bytes)?;
    let format = r.format();
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // The decoded image at 16 bits per channel with alpha, and the RGB copy.
    limits.max_alloc = Some(max_pixels * 8 + max_pixels * 3 + (1 << 20));
    r.limits(limits);
    let mut decoder = r.into_decoder().map_err(|e| failed(format, e))?;
    // Unreadable EXIF is no reason to refuse the pixels: they stay as stored.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| failed(format, e))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
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

    /// A TIFF-style EXIF block holding one entry, Orientation = `value`.
    pub fn exif_orientation(value: u16) -> Vec<u8> {
        let mut e = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
        e.extend_from_slice(&value.to_be_bytes());
        e.extend_from_slice(&[0; 6]);
        e
    }

    fn encode(img: &RgbImage, format: ImageFormat, orientation: u16) -> Vec<u8> {
        use image::ImageEncoder;
        let mut out = Vec::new();
        let (w, h) = img.dimensions();
        match format {
            ImageFormat::Png => {
                let mut enc = image::codecs::png::PngEncoder::new(&mut out);
                enc.set_exif_metadata(exif_orientation(orientation)).unwrap();
                enc.write_image(img, w, h, image::ExtendedColorType::Rgb8).unwrap();
            }
            _ => {
                let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
                enc.set_exif_metadata(exif_orientation(orientation)).unwrap();
                enc.write_image(img, w, h, image::ExtendedColorType::Rgb8).unwrap();
            }
        }
        out
    }

    /// The pixels a camera stores for an `upright` scene with EXIF
    /// orientation `o`: the inverse of the turn a viewer applies.
    fn stored(upright: &RgbImage, o: u16) -> RgbImage {
        use image::imageops::{flip_horizontal, flip_vertical, rotate180, rotate270, rotate90};
        match o {
            1 => upright.clone(),
            2 => flip_horizontal(upright),
            3 => rotate180(upright),
            4 => flip_vertical(upright),
            5 => flip_horizontal(&rotate90(upright)),
            6 => rotate270(upright),
            7 => flip_horizontal(&rotate270(upright)),
            _ => rotate90(upright),
        }
    }

    #[test]
    fn all_eight_exif_orientations_come_out_upright() {
        // 6 x 4, every pixel its own colour: any wrong turn shows.
        let upright = RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
        for o in 1..=8u16 {
            let png = encode(&stored(&upright, o), ImageFormat::Png, o);
            assert_eq!(dimensions(&png, DEFAULT_MAX_PIXELS).unwrap().0 * 4, if o >= 5 { 16 } else { 24 });
            assert_eq!(decode(&png, DEFAULT_MAX_PIXELS).unwrap(), upright, "PNG, orientation {o}");
        }
        // JPEG (what phones write): lossy, so the turned decode is checked
        // against the same bytes decoded without the tag, then turned.
        let upright = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 100]));
        for o in 1..=8u16 {
            let tagged = encode(&stored(&upright, o), ImageFormat::Jpeg, o);
            let plain = encode(&stored(&upright, o), ImageFormat::Jpeg, 1);
            let mut turned = DynamicImage::ImageRgb8(decode(&plain, DEFAULT_MAX_PIXELS).unwrap());
            turned.apply_orientation(image::metadata::Orientation::from_exif(o as u8).unwrap());
            let got = decode(&tagged, DEFAULT_MAX_PIXELS).unwrap();
            assert_eq!(got, turned.into_rgb8(), "JPEG, orientation {o}");
            assert_eq!(got.dimensions(), (64, 48));
            // The top-left corner is dark, the bottom-right light.
            assert!(got.get_pixel(0, 0)[0] < 30 && got.get_pixel(63, 47)[0] > 220, "JPEG, orientation {o}");
        }
    }

    #[test]
    fn damaged_images_say_what_they_are() {
        let full = png(40, 30);
        let e = decode(&full[..full.len() / 2], DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(matches!(e, PhotoError::Broken { format: "PNG", .. }), "{e}");
        assert!(e.to_string().starts_with("a damaged PNG file"), "{e}");
        let e = decode(b"P5 4 4 0\n0000000000000000", DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(e.to_string().starts_with("a damaged PNM file"), "{e}");
        let e = decode(b"not a photo", DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(e.to_string().starts_with("not an image"), "{e}");
    }

    #[test]
    fn photos_under_the_limit_decode_and_fit() {
        let img = decode(&png(3000, 1000), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(fit(img, DETECT_MAX_SIDE).dimensions(), (2000, 667));
        assert!(matches!(decode(b"not a photo", DEFAULT_MAX_PIXELS), Err(PhotoError::NotAnImage(_))));
        assert!(decode(b"", DEFAULT_MAX_PIXELS).unwrap_err().to_string().contains("empty"));
    }
}
