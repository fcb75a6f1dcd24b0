//! Who is in a photo: the answer every path gives (a classifier's or a
//! gallery's), with the threshold below which it is "unknown".

use super::session::Prediction;
use serde::Serialize;

pub const UNKNOWN: &str = "unknown";

/// Who is in a photo.
#[derive(Debug, Serialize, Clone)]
pub struct Answer {
    /// The person named, or "unknown" below the threshold.
    pub person: String,
    /// The cosine similarity below which a face is "unknown": the
    /// gallery's, or the classifier's calibrated open-set threshold; none
    /// for classifiers without one.
    pub threshold: Option<f64>,
    /// The closest people, best first: a classifier's probabilities (and
    /// cosines for ArcFace), a gallery's cosines.
    pub top: Vec<Prediction>,
}

impl Answer {
    /// The score the threshold is on, of the best match.
    pub fn best_cosine(&self) -> Option<f32> {
        self.top.first().and_then(|p| p.cosine)
    }
}
