//! A model readied for inference (trained here or imported): model inputs
//! to embeddings and predictions, and what the model must be shown of a
//! photo (`framing`). Photos become model inputs in `photo`, the one path
//! every command, the server and the browser take.

use super::embedding::normalise;
use crate::data::input::{self, flip_horizontal, Framing, Normalization};
use crate::data::Batch;
use crate::gpu::Gpu;
use crate::io::checkpoint::OpenSet;
use crate::io::model_file::{self, Model};
use crate::models::Head;
use crate::nn::{Backend, GpuBackend};
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;

#[derive(Serialize, Debug, Clone)]
pub struct Prediction {
    pub person: String,
    /// A classifier's softmax probability (none for a gallery's matches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f32>,
    /// ArcFace classifiers: the cosine similarity of the face's embedding
    /// to the person's class centre (what the open-set threshold is on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine: Option<f32>,
}

pub const NAMES_NOBODY: &str =
    "an imported network gives embeddings, not people: use embed, verify or identify (or train --init)";

pub struct Session<'g> {
    pub b: GpuBackend<'g>,
    pub model: Model<GpuBackend<'g>>,
    /// What the model is shown of a photo: what it was trained on, unless
    /// overridden (`--align`, `--no-align`).
    pub framing: Framing,
    /// Embeddings add the horizontally flipped image's (then normalise).
    pub flip: bool,
}

impl<'g> Session<'g> {
    pub fn open(gpu: &'g Gpu, path: &Path) -> Result<Session<'g>> {
        let mut b = GpuBackend::new(gpu)?;
        let model = model_file::open(path, &mut b)?.for_inference(&mut b)?;
        Ok(Session::new(b, model))
    }

    /// A session on a model file's bytes (the browser fetches them); errors
    /// name `origin`.
    pub async fn from_bytes(gpu: &'g Gpu, origin: &Path, bytes: &[u8]) -> Result<Session<'g>> {
        let mut b = GpuBackend::new(gpu)?;
        let file = model_file::parse(origin, bytes)?;
        let model = model_file::upload(origin, file, &mut b)?.for_inference_async(&mut b).await?;
        Ok(Session::new(b, model))
    }

    fn new(b: GpuBackend<'g>, model: Model<GpuBackend<'g>>) -> Session<'g> {
        // Embedding networks from elsewhere are trained on aligned crops.
        let framing = model.meta().map_or(Framing::AlignedFace, |m| m.framing());
        Session { b, model, framing, flip: true }
    }

    fn input_size(&self) -> usize {
        self.model.input_size()
    }

    fn normalization(&self) -> Normalization {
        self.model.normalization()
    }

    /// The people a classifier knows (none for an imported network).
    pub fn classes(&self) -> &[String] {
        self.model.meta().map_or(&[], |m| &m.classes)
    }

    /// A classifier's calibrated open-set threshold, if it has one.
    pub fn open_set(&self) -> Option<&OpenSet> {
        self.model.meta().and_then(|m| m.open_set.as_ref())
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
        let raw = self.model.embed_raw(&mut self.b, &x)?;
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
        // ArcFace logits are s x cosine (no margin at inference).
        let scale = match net.spec.head {
            Head::ArcFace { s, .. } => Some(s),
            Head::Softmax => None,
        };
        let c = meta.classes.len();
        Ok(self
            .b
            .download_async(&logits)
            .await
            .chunks(c)
            .map(|row| {
                // Softmax in f64 on the host: a few dozen numbers a photo.
                let most = row.iter().copied().fold(f32::MIN, f32::max) as f64;
                let exp: Vec<f64> = row.iter().map(|&v| (v as f64 - most).exp()).collect();
                let sum: f64 = exp.iter().sum();
                let mut idx: Vec<usize> = (0..c).collect();
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                idx.iter()
                    .take(top.max(1))
                    .map(|&i| Prediction {
                        person: meta.classes[i].clone(),
                        probability: Some((exp[i] / sum) as f32),
                        cosine: scale.map(|s| (row[i] as f64 / s) as f32),
                    })
                    .collect()
            })
            .collect())
    }

    /// A photo (already a face crop) as model input: resized and normalised.
    pub fn to_input(&self, img: &image::RgbImage) -> Vec<f32> {
        input::to_input(img, self.input_size(), &self.normalization())
    }
}
