//! Model files: a checkpoint of a network trained here (`checkpoint`), or an
//! imported network (`arcface import`): its weights by graph name and its
//! graph as JSON metadata under `arcface_graph`. `read` is the one place
//! that tells the two apart.

use super::checkpoint::{self, CheckpointMeta};
use super::tensorfile::{write_atomic, Loaded, TensorFile};
use crate::data::input::Normalization;
use crate::models::graph::{GraphDef, GraphNet};
use crate::models::Net;
use crate::nn::Backend;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const GRAPH_KEY: &str = "arcface_graph";

/// Saves an imported graph and its weights (by graph name), atomically.
pub fn save_graph(path: &Path, def: &GraphDef, weights: &BTreeMap<String, Loaded>) -> Result<()> {
    let meta = HashMap::from([(GRAPH_KEY.to_string(), serde_json::to_string(def)?)]);
    write_atomic(path, weights, meta).with_context(|| format!("saving {}", path.display()))
}

/// A model file as read from disk; nothing is uploaded yet.
pub enum ModelFile {
    /// An imported network: its graph and its weights by graph name.
    Graph { def: GraphDef, file: TensorFile },
    /// A checkpoint of a network trained here, its metadata checked.
    Checkpoint { meta: CheckpointMeta, file: TensorFile },
}

/// A model on a backend. (One per session: boxing the larger variant
/// would save nothing worth an indirection.)
#[allow(clippy::large_enum_variant)]
pub enum Model<B: Backend> {
    /// Trained here: a classifier, and embeddings for MobileFaceNet.
    Trained(Net<B>, CheckpointMeta),
    /// An imported embedding network.
    Imported(GraphNet<B>),
}

impl<B: Backend> Model<B> {
    /// The network's graph (a trained classifier's backbone or whole network).
    pub fn graph(&self) -> &GraphDef {
        match self {
            Model::Trained(net, _) => net.graph(),
            Model::Imported(g) => g.def(),
        }
    }

    /// A checkpoint's metadata (none for an imported network).
    pub fn meta(&self) -> Option<&CheckpointMeta> {
        match self {
            Model::Trained(_, meta) => Some(meta),
            Model::Imported(_) => None,
        }
    }

    pub fn input_size(&self) -> usize {
        self.graph().input_size
    }

    /// How the model's inputs are normalised.
    pub fn normalization(&self) -> Normalization {
        self.meta().map_or_else(|| self.graph().normalization.clone(), |m| m.normalization.clone())
    }

    /// The graph's output in eval mode: embeddings before normalisation
    /// (an error for a classifier without an embedding layer).
    pub fn embed_raw(&mut self, b: &mut B, x: &B::T) -> Result<B::T> {
        match self {
            Model::Trained(net, _) => net.embed_raw(b, x),
            Model::Imported(g) => g.forward(b, x),
        }
    }

    /// Readies the model for inference only: batch norms folded into the
    /// layers before them, for every kind of model.
    pub fn for_inference(self, b: &mut B) -> Result<Model<B>> {
        pollster::block_on(self.for_inference_async(b))
    }

    /// `for_inference` as a future (folding reads the weights back).
    pub async fn for_inference_async(mut self, b: &mut B) -> Result<Model<B>> {
        match &mut self {
            Model::Trained(net, _) => net.fold_batch_norms_async(b).await?,
            Model::Imported(g) => g.fold(b).await?,
        }
        Ok(self)
    }
}

/// Reads a checkpoint or an imported graph; the error names the file.
pub fn read(path: &Path) -> Result<ModelFile> {
    classify(path, TensorFile::read(path)?)
}

/// A model file's bytes (fetched by the browser); errors name `origin`.
pub fn parse(origin: &Path, bytes: &[u8]) -> Result<ModelFile> {
    let file =
        TensorFile::parse(bytes).with_context(|| format!("{}: not a valid safetensors file", origin.display()))?;
    classify(origin, file)
}

fn classify(path: &Path, file: TensorFile) -> Result<ModelFile> {
    match file.metadata.get(GRAPH_KEY) {
        Some(json) => {
            let def = serde_json::from_str(json)
                .with_context(|| format!("{}: unreadable graph description", path.display()))?;
            Ok(ModelFile::Graph { def, file })
        }
        None => {
            let meta = checkpoint::meta_of(path, &file)?;
            Ok(ModelFile::Checkpoint { meta, file })
        }
    }
}

/// Opens either kind of model file on a backend.
pub fn open<B: Backend>(path: &Path, b: &mut B) -> Result<Model<B>> {
    upload(path, read(path)?, b)
}

/// A model file, read or parsed, on a backend; errors name `path`.
pub fn upload<B: Backend>(path: &Path, file: ModelFile, b: &mut B) -> Result<Model<B>> {
    match file {
        ModelFile::Graph { def, file } => Ok(Model::Imported(GraphNet::new(b, def, weights(file))?)),
        ModelFile::Checkpoint { meta, file } => {
            let net = checkpoint::net_of(path, &meta, &file, b)?;
            Ok(Model::Trained(net, meta))
        }
    }
}

/// A file's tensors as (name, shape, values).
pub fn weights(file: TensorFile) -> impl Iterator<Item = (String, Vec<usize>, Vec<f32>)> {
    file.tensors.into_iter().map(|(n, t)| (n, t.shape, t.values))
}
