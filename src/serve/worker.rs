//! The GPU side of the server: one thread owns the device, the models and
//! the face detector, and answers jobs one at a time from a queue, so
//! concurrent requests never share GPU state.

use super::queue::FairQueue;
use crate::data::photo::{self, PhotoError};
use crate::detect::{Detector, Options};
use crate::gpu::{Gpu, GpuOptions};
use crate::recognize::embedding::dot;
use crate::recognize::gallery::Gallery;
use crate::recognize::photo::{self as recognition, Refusal};
use crate::recognize::session::{Prediction, Session};
use anyhow::Result;
use base64::Engine;
use image::RgbImage;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// A request's failure: HTTP status and the message shown to the user.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    /// "classifier" (names its people) or "embedding" (with a gallery).
    pub kind: String,
    pub people: Vec<String>,
    /// Where the page fetches the model file to run it in the browser, and
    /// its size in bytes.
    pub weights: String,
    pub bytes: u64,
    /// Where the page fetches the gallery an embedding model names people
    /// from.
    pub gallery: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PredictAnswer {
    pub model: String,
    /// The person named, or "unknown" below `threshold`.
    pub person: String,
    /// The cosine similarity below which a face is "unknown" (a gallery's,
    /// or a classifier's calibrated one).
    pub threshold: Option<f64>,
    pub top: Vec<Prediction>,
    /// The aligned face that was used, as a PNG data URL (when detecting).
    pub face: Option<String>,
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
    pub ms: f64,
    /// Photos answered in the same pass of the model (`serve --max-batch`).
    pub batch: usize,
}

#[derive(Debug, Serialize)]
pub struct VerifyAnswer {
    pub model: String,
    pub similarity: f64,
    pub same: bool,
    pub threshold: f64,
    pub faces: [Option<String>; 2],
    pub ms: f64,
}

pub enum Job {
    /// Photos arrive decoded and fitted (`decode`), so the GPU thread never
    /// spends its time on an upload's pixels.
    Predict {
        model: String,
        image: RgbImage,
        reply: oneshot::Sender<Result<PredictAnswer, ApiError>>,
    },
    Verify {
        model: String,
        images: [RgbImage; 2],
        reply: oneshot::Sender<Result<VerifyAnswer, ApiError>>,
    },
}

/// Free device buffers the server keeps for reuse (`Gpu::set_buffer_cache`).
const SERVER_BUFFER_CACHE: u64 = 64 << 20;

pub struct Config {
    pub models: Vec<(String, PathBuf)>,
    pub gallery: Option<PathBuf>,
    pub detect: bool,
    pub verify_threshold: f64,
    pub gpu: GpuOptions,
    /// Photos waiting for the same model answered in one pass, at most
    /// (1: one at a time).
    pub max_batch: usize,
}

/// `serve --max-batch`'s default.
pub const MAX_BATCH: usize = 8;

struct Loaded<'g> {
    name: String,
    session: Session<'g>,
}

pub(super) fn png_data_url(img: &image::RgbImage) -> String {
    let mut bytes = Vec::new();
    let _ = img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png);
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Why an upload is not a photo the server takes, as the user sees it.
pub(super) fn refusal(e: PhotoError) -> ApiError {
    match e {
        e @ PhotoError::TooLarge { .. } => ApiError::new(413, e.to_string()),
        PhotoError::NotAnImage(_) => ApiError::new(400, "not an image (PNG, JPEG, BMP or PNM)"),
        e @ PhotoError::Broken { .. } => ApiError::new(400, e.to_string()),
    }
}

/// The photo's size from its header (for the server's budgets); 400 or 413
/// as `decode` would answer.
pub(super) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::new(400, "the upload is empty"));
    }
    photo::dimensions(bytes, photo::max_pixels()).map_err(refusal)
}

/// An upload as a photo for the models: refused from its header when over
/// the pixel limit (413), decoded, its longest side fitted to
/// `DETECT_MAX_SIDE`.
pub(super) fn decode(bytes: &[u8]) -> Result<RgbImage, ApiError> {
    dimensions(bytes)?;
    photo::decode(bytes, photo::max_pixels()).map(|img| photo::fit(img, photo::DETECT_MAX_SIDE)).map_err(refusal)
}

/// Starts the GPU thread; returns the job queue and the models it serves
/// once they are loaded (or why they could not be).
pub fn start(cfg: Config) -> Result<(Arc<FairQueue<Job>>, Vec<ModelInfo>)> {
    let queue = Arc::new(FairQueue::default());
    let (ready_tx, ready_rx) = channel::<Result<Vec<ModelInfo>, String>>();
    let jobs = queue.clone();
    std::thread::spawn(move || {
        run(cfg, &jobs, ready_tx);
        jobs.close();
    });
    let models = ready_rx.recv()?.map_err(anyhow::Error::msg)?;
    Ok((queue, models))
}

fn run(cfg: Config, jobs: &FairQueue<Job>, ready: Sender<Result<Vec<ModelInfo>, String>>) {
    let setup = || -> Result<(Gpu, Option<Gallery>)> {
        Ok((Gpu::with_options(&cfg.gpu)?, cfg.gallery.as_deref().map(Gallery::load).transpose()?))
    };
    let (gpu, gallery) = match setup() {
        Ok(v) => {
            // Photos come in every size, so buffers are rarely reused; a
            // small cache keeps the server's memory bounded.
            v.0.set_buffer_cache(SERVER_BUFFER_CACHE);
            v
        }
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return;
        }
    };
    let load = || -> Result<(Vec<Loaded>, Option<Detector>, Vec<ModelInfo>)> {
        let mut loaded = Vec::new();
        let mut info = Vec::new();
        for (name, path) in &cfg.models {
            let mut session = Session::open(&gpu, path).map_err(|e| e.context(format!("model {name}")))?;
            if !cfg.detect {
                // --no-detect: the uploads are face crops already.
                session.framing = crate::data::input::Framing::WholePhoto;
            }
            let people = session.classes().to_vec();
            let (kind, people) = match (&people.is_empty(), &gallery) {
                (false, _) => ("classifier", people),
                (true, Some(g)) => {
                    g.check_checkpoint(cfg.gallery.as_deref().unwrap_or(Path::new("--gallery")), path)?;
                    ("embedding", g.meta.people.clone())
                }
                (true, None) => anyhow::bail!("model {name} names nobody: give --gallery (from `arcface enroll`)"),
            };
            let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let weights = format!("/api/models/{name}/weights");
            let gallery = (kind == "embedding").then(|| "/api/gallery".to_string());
            info.push(ModelInfo { name: name.clone(), kind: kind.into(), people, weights, bytes, gallery });
            loaded.push(Loaded { name: name.clone(), session });
        }
        let det = if cfg.detect { Some(Detector::open(&gpu, None, Options::default())?) } else { None };
        Ok((loaded, det, info))
    };
    let (mut models, mut det, info) = match load() {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return;
        }
    };
    let _ = ready.send(Ok(info));
    // Predictions waiting for the same model are answered together: each
    // photo's face found, then every face through the model in one pass.
    let same_model =
        |a: &Job, b: &Job| matches!((a, b), (Job::Predict { model: x, .. }, Job::Predict { model: y, .. }) if x == y);
    while let Some(batch) = jobs.pop_batch(cfg.max_batch.max(1), same_model) {
        let mut predictions = Vec::new();
        for job in batch {
            match job {
                Job::Predict { model, image, reply } => predictions.push((model, image, reply)),
                Job::Verify { model, images, reply } => {
                    let _ = reply.send(verify(&mut models, det.as_mut(), &model, &images, cfg.verify_threshold));
                }
            }
        }
        if let Some((model, ..)) = predictions.first() {
            let model = model.clone();
            let images: Vec<&RgbImage> = predictions.iter().map(|(_, image, _)| image).collect();
            let answers = predict(&mut models, det.as_mut(), gallery.as_ref(), &model, &images);
            for ((_, _, reply), answer) in predictions.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
    }
}

fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::NoFace => ApiError::new(422, r.to_string()),
        Refusal::NoGallery | Refusal::Failed(_) => ApiError::new(500, r.to_string()),
    }
}

fn find<'a, 'g>(models: &'a mut [Loaded<'g>], name: &str) -> Result<&'a mut Session<'g>, ApiError> {
    let known: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    models
        .iter_mut()
        .find(|m| m.name == name)
        .map(|m| &mut m.session)
        .ok_or_else(|| ApiError::new(404, format!("unknown model `{name}` (models: {})", known.join(", "))))
}

/// Each photo's answer: its face found (a 422 if none), then all the faces
/// through the model in one pass.
fn predict(
    models: &mut [Loaded],
    mut det: Option<&mut Detector>,
    gallery: Option<&Gallery>,
    model: &str,
    images: &[&RgbImage],
) -> Vec<Result<PredictAnswer, ApiError>> {
    let started = Instant::now();
    let s = match find(models, model) {
        Ok(s) => s,
        Err(e) => return images.iter().map(|_| Err(e.clone())).collect(),
    };
    let looks: Vec<_> =
        images.iter().map(|img| pollster::block_on(recognition::look(s, det.as_deref_mut(), img))).collect();
    let inputs: Vec<Vec<f32>> = looks.iter().filter_map(|l| l.as_ref().ok().map(|(input, _)| input.clone())).collect();
    let answers = match inputs.is_empty() {
        true => Vec::new(),
        false => match pollster::block_on(recognition::answer_inputs(s, gallery, &inputs, 5)) {
            Ok(a) => a.into_iter().map(Ok).collect(),
            Err(r) => {
                let e = refused(r);
                inputs.iter().map(|_| Err(e.clone())).collect()
            }
        },
    };
    let mut answers = answers.into_iter();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    looks
        .into_iter()
        .map(|l| {
            let (_, found) = l.map_err(refused)?;
            let a = answers.next().expect("an answer for every face found")?;
            Ok(PredictAnswer {
                model: model.to_string(),
                person: a.person,
                threshold: a.threshold,
                top: a.top,
                face: found.as_ref().map(|f| png_data_url(&f.crop)),
                bbox: found.map(|f| f.face.bbox),
                ms,
                batch: images.len(),
            })
        })
        .collect()
}

fn verify(
    models: &mut [Loaded],
    mut det: Option<&mut Detector>,
    model: &str,
    images: &[RgbImage; 2],
    threshold: f64,
) -> Result<VerifyAnswer, ApiError> {
    let started = Instant::now();
    let s = find(models, model)?;
    let mut inputs = Vec::new();
    let mut faces = [None, None];
    for (i, img) in images.iter().enumerate() {
        let (input, found) = pollster::block_on(recognition::look(s, det.as_deref_mut(), img)).map_err(refused)?;
        inputs.push(input);
        faces[i] = found.map(|f| png_data_url(&f.crop));
    }
    let e = s.embed_inputs(&inputs).map_err(|e| ApiError::new(400, format!("{e:#}")))?;
    let similarity = dot(&e[0], &e[1]);
    Ok(VerifyAnswer {
        model: model.to_string(),
        similarity,
        same: similarity >= threshold,
        threshold,
        faces,
        ms: started.elapsed().as_secs_f64() * 1e3,
    })
}
