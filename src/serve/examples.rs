//! Photos the page offers to try without an upload (built into the binary),
//! and the preview of any upload the browser cannot show itself (PGM, the
//! format of the bundled ORL faces).

use super::worker::{decode, png_data_url};
use crate::data::photo;
use image::RgbImage;
use serde::Serialize;

/// (name, file bytes): ORL faces (credit Olivetti Research Laboratory) and
/// London faces (CC BY 4.0; data/london/LICENSE.md).
const EXAMPLES: [(&str, &[u8]); 4] = [
    ("ORL s1", include_bytes!("../../data/orl/s1/1.pgm")),
    ("ORL s2", include_bytes!("../../data/orl/s2/1.pgm")),
    ("ORL s3", include_bytes!("../../data/orl/s3/1.pgm")),
    ("London 001", include_bytes!("../../data/london/001/neutral.jpg")),
];

#[derive(Serialize)]
pub struct Example {
    pub name: String,
    /// The photo as a PNG data URL: the page shows it and uploads it as is.
    pub image: String,
}

/// The examples, each decoded and re-encoded as PNG.
pub fn list() -> Vec<Example> {
    EXAMPLES
        .iter()
        .filter_map(|(name, bytes)| {
            decode(bytes).ok().map(|img| Example { name: name.to_string(), image: png_data_url(&img) })
        })
        .collect()
}

/// An upload decoded as the server decodes it, as a PNG data URL, scaled
/// down to at most `MAX_SIDE` pixels a side.
pub fn preview(img: RgbImage) -> String {
    const MAX_SIDE: u32 = 480;
    png_data_url(&photo::fit(img, MAX_SIDE))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_example_decodes_and_a_pgm_previews() {
        assert_eq!(super::list().len(), super::EXAMPLES.len());
        let img = super::decode(super::EXAMPLES[0].1).unwrap();
        let url = super::preview(img);
        assert!(url.starts_with("data:image/png;base64,"));
    }
}
