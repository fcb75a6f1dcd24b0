//! One photo to an answer: the one path the command line, the server and
//! the browser take. A photo (decoded upright) is shown to the model as the
//! model was trained (`Framing`): the largest face detected and aligned, or
//! the whole photo; a photo without a face where one is needed is refused,
//! never embedded whole. Then the people: a classifier's most probable,
//! "unknown" below its calibrated open-set threshold, or for an embedding
//! model the gallery's closest, "unknown" below the gallery's threshold.
//! Futures all the way: the browser awaits every read-back; native callers
//! wait with `pollster`.

pub use super::answer::{Answer, UNKNOWN};
use super::gallery::Gallery;
use super::session::{Session, NAMES_NOBODY};
use crate::data::dataset::Dataset;
use crate::data::input::Framing;
use crate::data::FileResult;
use crate::detect::{align, Detector, Face};
use crate::progress::Progress;
use anyhow::{anyhow, Result};
use image::RgbImage;
use std::path::{Path, PathBuf};

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

/// The model input for `img` as `s` must be shown it, and the face it was
/// read from. With a detector the largest face is found (a photo without
/// one is refused); aligned-face models need one.
pub async fn look(
    s: &Session<'_>,
    det: Option<&mut Detector<'_>>,
    img: &RgbImage,
) -> Result<(Vec<f32>, Option<FoundFace>), Refusal> {
    let found = match det {
        Some(d) => {
            let face = d.detect_async(img).await?.into_iter().next().ok_or(Refusal::NoFace)?;
            let crop = align::align(img, &face);
            Some(FoundFace { face, crop })
        }
        None => None,
    };
    let input = match (s.framing, &found) {
        (Framing::AlignedFace, Some(f)) => s.to_input(&f.crop),
        (Framing::AlignedFace, None) => {
            return Err(anyhow!("the model is shown aligned faces, and no face detector was given").into())
        }
        (Framing::WholePhoto, _) => s.to_input(img),
    };
    Ok((input, found))
}

/// Who is in each model input: a classifier's `top` most probable people
/// ("unknown" first when the best is below the open-set threshold), or the
/// gallery's closest for an embedding model.
pub async fn answer_inputs(
    s: &mut Session<'_>,
    gallery: Option<&Gallery>,
    inputs: &[Vec<f32>],
    top: usize,
) -> Result<Vec<Answer>, Refusal> {
    if s.classes().is_empty() {
        let g = gallery.ok_or(Refusal::NoGallery)?;
        let embeddings = s.embed_inputs_async(inputs).await?;
        return Ok(embeddings.iter().map(|e| g.answer(e, top)).collect());
    }
    let threshold = s.open_set().map(|o| o.threshold);
    let predictions = s.predict_inputs_async(inputs, top).await?;
    Ok(predictions
        .into_iter()
        .map(|top| {
            let best = &top[0];
            let below = matches!((threshold, best.cosine), (Some(t), Some(c)) if (c as f64) < t);
            let person = if below { UNKNOWN.to_string() } else { best.person.clone() };
            Answer { person, threshold, top }
        })
        .collect())
}

/// Who is in `img`, and the face it was read from.
pub async fn recognize(
    s: &mut Session<'_>,
    det: Option<&mut Detector<'_>>,
    gallery: Option<&Gallery>,
    img: &RgbImage,
    top: usize,
) -> Result<(Answer, Option<FoundFace>), Refusal> {
    let (input, found) = look(s, det, img).await?;
    Ok((answer_inputs(s, gallery, &[input], top).await?.remove(0), found))
}

/// The L2-normalised embedding of `img` as the model is shown it, and the
/// face.
pub async fn embed(
    s: &mut Session<'_>,
    det: Option<&mut Detector<'_>>,
    img: &RgbImage,
) -> Result<(Vec<f32>, Option<FoundFace>), Refusal> {
    let (input, found) = look(s, det, img).await?;
    Ok((s.embed_inputs_async(&[input]).await?.remove(0), found))
}

/// Photo files per GPU batch.
const BATCH: usize = 16;

/// A model and, when it is shown aligned faces, the detector: photo files
/// to answers for the command line. A file that cannot be read, or has no
/// face where one is needed, gets its own error; the others still run.
pub struct Recognizer<'g> {
    pub session: Session<'g>,
    pub detector: Option<Detector<'g>>,
    /// Counts the files (hidden unless set).
    pub progress: Progress,
}

impl<'g> Recognizer<'g> {
    pub fn new(session: Session<'g>, detector: Option<Detector<'g>>) -> Recognizer<'g> {
        Recognizer { session, detector, progress: Progress::hidden() }
    }

    /// L2-normalised embeddings of photo files.
    pub fn embed_files(&mut self, files: &[PathBuf]) -> Result<Vec<FileResult<Vec<f32>>>> {
        self.over_files(files, |s, inputs| Ok(s.embed_inputs(inputs)?))
    }

    /// A gallery of the people in `paths` (`Dataset::from_paths`: folders
    /// of per-person folders, a person's folder, or photos named by their
    /// folder), with the photos that could not be embedded and why.
    pub fn enroll(&mut self, paths: &[PathBuf], checkpoint: &Path) -> Result<(Gallery, Vec<(PathBuf, String)>)> {
        let data = Dataset::from_paths(paths)?;
        let files: Vec<PathBuf> = data.samples.iter().map(|x| x.path.clone()).collect();
        let results = self.embed_files(&files)?;
        Gallery::enroll(&data, results, checkpoint, self.session.framing, self.session.flip)
    }

    /// Who is in each photo file (`answer_inputs`).
    pub fn answer_files(
        &mut self,
        gallery: Option<&Gallery>,
        files: &[PathBuf],
        top: usize,
    ) -> Result<Vec<FileResult<Answer>>> {
        if self.session.classes().is_empty() && gallery.is_none() {
            anyhow::bail!(NAMES_NOBODY);
        }
        self.over_files(files, |s, inputs| {
            pollster::block_on(answer_inputs(s, gallery, inputs, top)).map_err(|r| anyhow!("{r}"))
        })
    }

    /// Runs `f` on batches of the files' model inputs.
    fn over_files<T>(
        &mut self,
        files: &[PathBuf],
        mut f: impl FnMut(&mut Session<'g>, &[Vec<f32>]) -> Result<Vec<T>>,
    ) -> Result<Vec<FileResult<T>>> {
        let mut out: Vec<FileResult<T>> = Vec::new();
        self.progress.expect(files.len() as u64);
        for chunk in files.chunks(BATCH) {
            self.progress.inc(chunk.len() as u64);
            let (mut inputs, mut slots) = (Vec::new(), Vec::new());
            // Decoded a core's worth at a time, then looked at in turn.
            let decoded = chunk.chunks(crate::data::input::decoders()).flat_map(crate::data::input::open_rgb_each);
            for (path, img) in chunk.iter().zip(decoded) {
                match img.and_then(|img| self.input_of(path, &img)) {
                    Ok(v) => {
                        slots.push(out.len());
                        inputs.push(v);
                        out.push(FileResult { path: path.clone(), result: None, error: None });
                    }
                    Err(e) => out.push(FileResult::failed(path.clone(), &e)),
                }
            }
            if inputs.is_empty() {
                continue;
            }
            for (slot, r) in slots.into_iter().zip(f(&mut self.session, &inputs)?) {
                out[slot].result = Some(r);
            }
        }
        self.progress.finish();
        Ok(out)
    }

    /// A photo file's decoded image as the model input; errors name the file.
    fn input_of(&mut self, path: &Path, img: &RgbImage) -> Result<Vec<f32>> {
        match pollster::block_on(look(&self.session, self.detector.as_mut(), img)) {
            Ok((input, _)) => Ok(input),
            Err(Refusal::NoFace) => Err(anyhow!(
                "{}: no face found (the model is shown {}; --no-align shows it the whole photo)",
                path.display(),
                self.session.framing.name()
            )),
            Err(e) => Err(anyhow!("{}: {e}", path.display())),
        }
    }
}
