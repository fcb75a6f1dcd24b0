//! One photo to an answer, the same for the server and the browser: the
//! largest face found and aligned, the model input each model wants, then
//! the most probable people (a classifier) or the gallery's closest (an
//! embedding model). Futures all the way: the browser awaits every
//! read-back; native callers wait with `pollster`.

use super::gallery::Gallery;
use super::session::{Prediction, Session};
use crate::detect::{align, Detector, Face};
use image::RgbImage;

/// Why a photo got no answer.
#[derive(Debug)]
pub enum Refusal {
    /// The detector found no face in it.
    NoFace,
    /// An embedding model without a gallery to name people from.
    NoGallery,
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Refusal {
        Refusal::Failed(e)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoFace => write!(f, "no face found in the photo"),
            Refusal::NoGallery => write!(f, "an embedding model without a gallery"),
            Refusal::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

/// The face a photo is recognised by: the largest detected, and its
/// aligned 112 x 112 crop.
pub struct FoundFace {
    pub face: Face,
    pub crop: RgbImage,
}

/// The largest face, aligned; `None` without a detector (the whole photo
/// is used).
pub async fn find_face(det: Option<&mut Detector<'_>>, img: &RgbImage) -> Result<Option<FoundFace>, Refusal> {
    let Some(d) = det else { return Ok(None) };
    let faces = d.detect_async(img).await?;
    let face = faces.into_iter().next().ok_or(Refusal::NoFace)?;
    let crop = align::align(img, &face);
    Ok(Some(FoundFace { face, crop }))
}

/// Models see what they were trained on: aligned crops for models trained
/// with --align and imported ones (trained on aligned faces elsewhere),
/// the whole photo otherwise (the detector still finds the face, so a photo
/// without one is refused and the user sees which face it was).
pub fn model_input(s: &Session, img: &RgbImage, found: Option<&FoundFace>) -> Vec<f32> {
    let aligned = s.trained_on_aligned_faces() || s.classes().is_empty();
    match found {
        Some(f) if aligned => s.to_input(&f.crop),
        _ => s.to_input(img),
    }
}

/// The `top` most probable people in `img`, and the face they were read
/// from.
pub async fn recognize(
    s: &mut Session<'_>,
    det: Option<&mut Detector<'_>>,
    gallery: Option<&Gallery>,
    img: &RgbImage,
    top: usize,
) -> Result<(Vec<Prediction>, Option<FoundFace>), Refusal> {
    let found = find_face(det, img).await?;
    let input = model_input(s, img, found.as_ref());
    let people = if s.classes().is_empty() {
        let g = gallery.ok_or(Refusal::NoGallery)?;
        let e = s.embed_inputs_async(&[input]).await?;
        let id = g.identify(&e[0], top);
        let mut people: Vec<Prediction> =
            id.top.iter().map(|m| Prediction { person: m.person.clone(), probability: m.score as f32 }).collect();
        if id.answer == "unknown" {
            people.insert(0, Prediction { person: "unknown".into(), probability: id.best.score as f32 });
        }
        people
    } else {
        s.predict_inputs_async(&[input], top).await?.remove(0)
    };
    Ok((people, found))
}

/// The L2-normalised embedding of `img` (of its face when detecting), and
/// the face.
pub async fn embed(
    s: &mut Session<'_>,
    det: Option<&mut Detector<'_>>,
    img: &RgbImage,
) -> Result<(Vec<f32>, Option<FoundFace>), Refusal> {
    let found = find_face(det, img).await?;
    let input = model_input(s, img, found.as_ref());
    Ok((s.embed_inputs_async(&[input]).await?.remove(0), found))
}
