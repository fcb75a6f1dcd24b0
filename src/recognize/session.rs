//! Inference on image files with a checkpoint (trained here or imported):
//! embeddings and predictions. A file that cannot be read gets its own
//! error; the others still run.

use super::embedding::normalise;
use crate::data::input::{self, flip_horizontal, Normalization};
use crate::data::{Batch, FileResult};
use crate::detect::{align, Detector};
use crate::gpu::Gpu;
use crate::io::model_file::{self, Model};
use crate::nn::{Backend, GpuBackend};
use crate::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Images per GPU batch.
const BATCH: usize = 16;

#[derive(Serialize, Debug)]
pub struct Prediction {
    pub person: String,
    pub probability: f32,
}

const NAMES_NOBODY: &str =
    "an imported network gives embeddings, not people: use embed, verify or identify (or train --init)";

pub struct Session<'g> {
    pub b: GpuBackend<'g>,
    pub model: Model<GpuBackend<'g>>,
    /// Detect and align the face of each photo first (the largest face).
    pub align: Option<Detector<'g>>,
    /// Embeddings add the horizontally flipped image's (then normalise).
    pub flip: bool,
    /// Counts the files of `embed` and `predict` (hidden by default).
    pub progress: Progress,
}

impl<'g> Session<'g> {
    pub fn open(gpu: &'g Gpu, path: &Path) -> Result<Session<'g>> {
        let mut b = GpuBackend::new(gpu)?;
        let model = model_file::open(path, &mut b)?.for_inference(&mut b)?;
        Ok(Session { b, model, align: None, flip: true, progress: Progress::hidden() })
    }

    /// A session on a model file's bytes (the browser fetches them); errors
    /// name `origin`.
    pub async fn from_bytes(gpu: &'g Gpu, origin: &Path, bytes: &[u8]) -> Result<Session<'g>> {
        let mut b = GpuBackend::new(gpu)?;
        let file = model_file::parse(origin, bytes)?;
        let model = model_file::upload(origin, file, &mut b)?.for_inference_async(&mut b).await?;
        Ok(Session { b, model, align: None, flip: true, progress: Progress::hidden() })
    }

    fn input_size(&self) -> usize {
        match &self.model {
            Model::Trained(n, _) => n.spec.input,
            Model::Imported(g) => g.def.input_size,
        }
    }

    fn normalization(&self) -> Normalization {
        match &self.model {
            Model::Trained(_, m) => m.normalization.clone(),
            Model::Imported(g) => g.def.normalization.clone(),
        }
    }

    /// The people a classifier knows (none for an imported network).
    pub fn classes(&self) -> &[String] {
        match &self.model {
            Model::Trained(_, m) => &m.classes,
            Model::Imported(_) => &[],
        }
    }

    /// Whether the checkpoint's training run used `--align`.
    pub fn trained_on_aligned_faces(&self) -> bool {
        match &self.model {
            Model::Trained(_, m) => m.training.get("align").and_then(|v| v.as_bool()).unwrap_or(false),
            Model::Imported(_) => false,
        }
    }

    /// The model input for a photo: the aligned face when aligning (an error
    /// when there is none), else the whole photo resized.
    pub fn input(&mut self, img: &image::RgbImage) -> Result<Vec<f32>> {
        let (size, norm) = (self.input_size(), self.normalization());
        match &mut self.align {
            Some(d) => {
                let faces = d.detect(img)?;
                let face = faces.first().ok_or_else(|| anyhow!("no face found"))?;
                Ok(input::to_input(&align::align(img, face), size, &norm))
            }
            None => Ok(input::to_input(img, size, &norm)),
        }
    }

    /// Runs `f` on batches of the readable files; unreadable ones keep their error.
    fn run<T>(
        &mut self,
        files: &[PathBuf],
        mut f: impl FnMut(&mut Self, &[Vec<f32>]) -> Result<Vec<T>>,
    ) -> Result<Vec<FileResult<T>>> {
        let mut out: Vec<FileResult<T>> = Vec::new();
        self.progress.expect(files.len() as u64);
        for chunk in files.chunks(BATCH) {
            self.progress.inc(chunk.len() as u64);
            let mut inputs = Vec::new();
            let mut slots = Vec::new();
            for path in chunk {
                let input = input::open_rgb(path)
                    .and_then(|img| self.input(&img).with_context(|| format!("{}", path.display())));
                match input {
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
            for (slot, r) in slots.into_iter().zip(f(self, &inputs)?) {
                out[slot].result = Some(r);
            }
        }
        self.progress.finish();
        Ok(out)
    }

    /// L2-normalised embeddings of model inputs; with `flip`, of the sum of
    /// the image's and its mirror image's embeddings.
    pub fn embed_inputs(&mut self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.embed_inputs_async(inputs))
    }

    /// `embed_inputs` as a future (the web's way).
    pub async fn embed_inputs_async(&mut self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let size = self.input_size();
        let mut batch = Batch::new(size, inputs.len() * 2);
        for x in inputs {
            batch.push(x, 0);
        }
        if self.flip {
            for x in inputs {
                batch.push(&flip_horizontal(x, size), 0);
            }
        }
        let x = self.b.upload(&batch.x, &batch.shape())?;
        let raw = match &mut self.model {
            Model::Trained(net, _) => net.embed_raw(&mut self.b, &x)?,
            Model::Imported(g) => g.forward(&mut self.b, &x)?,
        };
        let d = self.b.shape(&raw)[1];
        let v = self.b.download_async(&raw).await;
        let rows: Vec<&[f32]> = v.chunks(d).collect();
        Ok((0..inputs.len())
            .map(|i| {
                let mut e = rows[i].to_vec();
                if self.flip {
                    for (a, b) in e.iter_mut().zip(rows[i + inputs.len()]) {
                        *a += b;
                    }
                }
                normalise(&mut e);
                e
            })
            .collect())
    }

    /// L2-normalised embeddings of image files.
    pub fn embed(&mut self, files: &[PathBuf]) -> Result<Vec<FileResult<Vec<f32>>>> {
        self.run(files, |s, inputs| s.embed_inputs(inputs))
    }

    /// The `top` most probable people per image.
    pub fn predict(&mut self, files: &[PathBuf], top: usize) -> Result<Vec<FileResult<Vec<Prediction>>>> {
        if matches!(self.model, Model::Imported(_)) {
            bail!(NAMES_NOBODY);
        }
        self.run(files, |s, inputs| s.predict_inputs(inputs, top))
    }

    /// The `top` most probable people for each model input.
    pub fn predict_inputs(&mut self, inputs: &[Vec<f32>], top: usize) -> Result<Vec<Vec<Prediction>>> {
        pollster::block_on(self.predict_inputs_async(inputs, top))
    }

    /// `predict_inputs` as a future (the web's way).
    pub async fn predict_inputs_async(&mut self, inputs: &[Vec<f32>], top: usize) -> Result<Vec<Vec<Prediction>>> {
        let mut batch = Batch::new(self.input_size(), inputs.len());
        for x in inputs {
            batch.push(x, 0);
        }
        let x = self.b.upload(&batch.x, &batch.shape())?;
        let Model::Trained(net, meta) = &mut self.model else {
            bail!(NAMES_NOBODY);
        };
        let logits = net.logits(&mut self.b, &x)?;
        let probs = self.b.softmax(&logits)?;
        let c = meta.classes.len();
        Ok(self
            .b
            .download_async(&probs)
            .await
            .chunks(c)
            .map(|row| {
                let mut idx: Vec<usize> = (0..c).collect();
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                idx.iter()
                    .take(top.max(1))
                    .map(|&i| Prediction { person: meta.classes[i].clone(), probability: row[i] })
                    .collect()
            })
            .collect())
    }

    /// A photo (already a face crop) as model input: resized and normalised.
    pub fn to_input(&self, img: &image::RgbImage) -> Vec<f32> {
        input::to_input(img, self.input_size(), &self.normalization())
    }
}
