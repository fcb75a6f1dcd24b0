//! Checkpoints: every parameter (running statistics included) in a
//! safetensors file, with metadata that makes the file self-describing: the
//! architecture and head, input size, normalisation, class names in label
//! order, the training configuration and metrics. Written atomically; loading
//! checks everything and names the file and the mismatch.

use super::tensorfile::{write_atomic, Loaded, TensorFile};
use crate::data::input::{Framing, Normalization};
use crate::models::{ModelSpec, Net, BACKBONE};
use crate::nn::Backend;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const KEY: &str = "arcface";
const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    pub model: ModelSpec,
    pub normalization: Normalization,
    /// Person names; index = label.
    pub classes: Vec<String>,
    #[serde(default)]
    pub training: serde_json::Value,
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// `Arch::Imported`: the backbone's layers (its weights are `backbone.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<crate::models::graph::GraphDef>,
    /// What the model was trained on (absent in checkpoints from before it
    /// was recorded: `framing()` derives it from the training options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framing: Option<Framing>,
    /// The open-set threshold of an ArcFace classifier, calibrated on the
    /// validation split: below it, a photo is "unknown".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_set: Option<OpenSet>,
}

/// A classifier's open-set threshold: the cosine similarity between a
/// face's embedding and a person's class centre (the ArcFace weight row)
/// that only `far` of the impostor comparisons on the validation split
/// reach (each validation photo against every other person's centre), as a
/// gallery's threshold is calibrated on its impostors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenSet {
    pub threshold: f64,
    pub far: f64,
    /// Validation photos and impostor comparisons it was calibrated on.
    pub photos: usize,
    pub impostors: usize,
    /// The share of validation photos whose own person scored at or above
    /// the threshold.
    pub genuine_accepted: f64,
}

/// The score that a fraction `far` of the impostor scores reach: the
/// (1 - far) quantile, or with few scores their maximum; 0.5 with none.
/// Galleries and classifiers calibrate "unknown" with it.
pub fn impostor_threshold(mut impostor: Vec<f64>, far: f64) -> f64 {
    if impostor.is_empty() {
        return 0.5;
    }
    impostor.sort_by(f64::total_cmp);
    let k = ((impostor.len() as f64) * (1.0 - far)).floor() as usize;
    impostor[k.min(impostor.len() - 1)]
}

impl CheckpointMeta {
    pub fn new(model: ModelSpec, classes: Vec<String>) -> CheckpointMeta {
        CheckpointMeta {
            format: FORMAT,
            model,
            normalization: Normalization::default(),
            classes,
            training: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
            graph: None,
            framing: None,
            open_set: None,
        }
    }

    /// What the model must be shown: as recorded, or for older checkpoints
    /// aligned faces when the run used `--align`, whole photos otherwise.
    pub fn framing(&self) -> Framing {
        self.framing.unwrap_or(match self.training.get("align").and_then(|v| v.as_bool()) {
            Some(true) => Framing::AlignedFace,
            _ => Framing::WholePhoto,
        })
    }
}

pub fn save<B: Backend>(path: &Path, b: &mut B, net: &Net<B>, meta: &CheckpointMeta) -> Result<()> {
    if meta.model != net.spec {
        bail!("checkpoint metadata describes {:?}, the network is {:?}", meta.model, net.spec);
    }
    if meta.classes.len() != net.spec.classes {
        bail!("{} class names for a model with {} classes", meta.classes.len(), net.spec.classes);
    }
    let mut tensors = BTreeMap::new();
    for p in &net.params.params {
        let shape = b.shape(&p.value).to_vec();
        tensors.insert(p.name.clone(), Loaded { shape, values: b.download(&p.value) });
    }
    let metadata = HashMap::from([(KEY.to_string(), serde_json::to_string(meta)?)]);
    write_atomic(path, &tensors, metadata)
}

/// Reads only the metadata (for listing models, checking before loading).
pub fn read_meta(path: &Path) -> Result<(CheckpointMeta, TensorFile)> {
    let file = TensorFile::read(path)?;
    Ok((meta_of(path, &file)?, file))
}

/// The checked metadata of a file read from `path`.
pub fn meta_of(path: &Path, file: &TensorFile) -> Result<CheckpointMeta> {
    let meta_json = file.metadata.get(KEY).with_context(|| {
        format!("{}: not an arcface checkpoint (no `{KEY}` metadata; import other models first)", path.display())
    })?;
    let meta: CheckpointMeta = serde_json::from_str(meta_json)
        .with_context(|| format!("{}: unreadable checkpoint metadata", path.display()))?;
    if meta.format != FORMAT {
        bail!("{}: checkpoint format {} (this build reads {FORMAT})", path.display(), meta.format);
    }
    if meta.classes.len() != meta.model.classes {
        bail!("{}: {} class names for {} classes", path.display(), meta.classes.len(), meta.model.classes);
    }
    Ok(meta)
}

pub fn load<B: Backend>(path: &Path, b: &mut B) -> Result<(Net<B>, CheckpointMeta)> {
    let (meta, file) = read_meta(path)?;
    Ok((net_of(path, &meta, &file, b)?, meta))
}

/// A fine-tuned imported network's backbone weights, by graph name.
pub fn backbone_weights(file: &TensorFile) -> impl Iterator<Item = (String, Vec<usize>, Vec<f32>)> + '_ {
    file.tensors
        .iter()
        .filter_map(|(name, t)| name.strip_prefix(BACKBONE).map(|n| (n.to_string(), t.shape.clone(), t.values.clone())))
}

/// The network a checkpoint file (read from `path`, metadata checked) holds.
pub fn net_of<B: Backend>(path: &Path, meta: &CheckpointMeta, file: &TensorFile, b: &mut B) -> Result<Net<B>> {
    if let Some(graph) = &meta.graph {
        let mut net = Net::pretrained(b, meta.model, graph.clone(), backbone_weights(file), 0)
            .with_context(|| format!("{}: the imported network does not load", path.display()))?;
        for (name, t) in file.tensors.iter().filter(|(n, _)| !n.starts_with(BACKBONE)) {
            if !net.params.contains(name) {
                bail!("{}: tensor `{name}` does not belong to a fine-tuned imported model", path.display());
            }
            let want = b.shape(net.params.get(name)).to_vec();
            if t.shape != want {
                bail!("{}: `{name}` has shape {:?}, the model needs {want:?}", path.display(), t.shape);
            }
            let v = b.upload(&t.values, &t.shape)?;
            net.params.set(name, v);
        }
        return Ok(net);
    }
    meta.model.validate().with_context(|| format!("{}: the model its metadata describes", path.display()))?;
    let expected: Vec<String> = meta.model.param_specs().into_iter().map(|p| p.name).collect();
    if let Some(extra) = file.tensors.keys().find(|k| !expected.contains(k)) {
        bail!("{}: tensor `{extra}` does not belong to a {:?} model", path.display(), meta.model.arch);
    }
    Net::from_values(b, meta.model, |name| file.tensors.get(name).map(|t| (t.shape.clone(), t.values.clone())))
        .with_context(|| format!("{}: does not match its own metadata ({:?})", path.display(), meta.model))
}
