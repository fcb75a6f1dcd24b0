//! Inference on image files with a checkpoint: embeddings and predictions.
//! A file that cannot be read gets its own error; the others still run.

use crate::align;
use crate::checkpoint::{self, CheckpointMeta};
use crate::detect::Detector;
use crate::gpu::Gpu;
use crate::models::Net;
use crate::nn::{Backend, GpuBackend};
use crate::preprocess;
use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Images per GPU batch.
const BATCH: usize = 16;

#[derive(Serialize, Debug)]
pub struct Prediction {
    pub person: String,
    pub probability: f32,
}

#[derive(Serialize, Debug)]
pub struct FileResult<T> {
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Session<'g> {
    pub b: GpuBackend<'g>,
    pub net: Net<GpuBackend<'g>>,
    pub meta: CheckpointMeta,
    /// Detect and align the face of each photo first (the largest face).
    pub align: Option<Detector<'g>>,
}

impl<'g> Session<'g> {
    pub fn open(gpu: &'g Gpu, checkpoint: &Path) -> Result<Session<'g>> {
        let mut b = GpuBackend::new(gpu)?;
        let (net, meta) = checkpoint::load(checkpoint, &mut b)?;
        Ok(Session { b, net, meta, align: None })
    }

    /// Whether the checkpoint's training run used `--align`.
    pub fn trained_on_aligned_faces(&self) -> bool {
        self.meta.training.get("align").and_then(|v| v.as_bool()).unwrap_or(false)
    }

    /// The model input for a photo: the aligned face when aligning (an error
    /// when there is none), else the whole photo resized.
    pub fn input(&mut self, img: &image::RgbImage) -> Result<Vec<f32>> {
        let size = self.meta.model.input;
        match &mut self.align {
            Some(d) => {
                let faces = d.detect(img)?;
                let face = faces.first().ok_or_else(|| anyhow!("no face found"))?;
                Ok(preprocess::to_input(&align::align(img, face), size, &self.meta.normalization))
            }
            None => Ok(preprocess::to_input(img, size, &self.meta.normalization)),
        }
    }

    /// Runs `f` on batches of the readable files; unreadable ones keep their error.
    fn run<T>(
        &mut self,
        files: &[PathBuf],
        mut f: impl FnMut(&mut Self, &[Vec<f32>]) -> Result<Vec<T>>,
    ) -> Result<Vec<FileResult<T>>> {
        let mut out: Vec<FileResult<T>> = Vec::new();
        for chunk in files.chunks(BATCH) {
            let mut inputs = Vec::new();
            let mut slots = Vec::new();
            for path in chunk {
                let input = preprocess::open_rgb(path)
                    .and_then(|img| self.input(&img).with_context(|| format!("{}", path.display())));
                match input {
                    Ok(v) => {
                        slots.push(out.len());
                        inputs.push(v);
                        out.push(FileResult { path: path.clone(), result: None, error: None });
                    }
                    Err(e) => out.push(FileResult { path: path.clone(), result: None, error: Some(format!("{e:#}")) }),
                }
            }
            if inputs.is_empty() {
                continue;
            }
            for (slot, r) in slots.into_iter().zip(f(self, &inputs)?) {
                out[slot].result = Some(r);
            }
        }
        Ok(out)
    }

    fn upload(&mut self, inputs: &[Vec<f32>]) -> Result<<GpuBackend<'g> as Backend>::T> {
        let size = self.meta.model.input;
        let flat: Vec<f32> = inputs.concat();
        self.b.upload(&flat, &[inputs.len(), 3, size, size])
    }

    /// L2-normalised embeddings.
    pub fn embed(&mut self, files: &[PathBuf]) -> Result<Vec<FileResult<Vec<f32>>>> {
        self.run(files, |s, inputs| {
            let x = s.upload(inputs)?;
            let e = s.net.embed(&mut s.b, &x)?;
            let d = s.b.shape(&e)[1];
            Ok(s.b.download(&e).chunks(d).map(<[f32]>::to_vec).collect())
        })
    }

    /// The `top` most probable people per image.
    pub fn predict(&mut self, files: &[PathBuf], top: usize) -> Result<Vec<FileResult<Vec<Prediction>>>> {
        self.run(files, |s, inputs| {
            let x = s.upload(inputs)?;
            let logits = s.net.logits(&mut s.b, &x)?;
            let probs = s.b.softmax(&logits)?;
            let c = s.meta.classes.len();
            Ok(s.b
                .download(&probs)
                .chunks(c)
                .map(|row| {
                    let mut idx: Vec<usize> = (0..c).collect();
                    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                    idx.iter()
                        .take(top.max(1))
                        .map(|&i| Prediction { person: s.meta.classes[i].clone(), probability: row[i] })
                        .collect()
                })
                .collect())
        })
    }
}
