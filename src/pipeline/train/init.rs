//! `train --init`: a pretrained backbone (an imported network, or a
//! MobileFaceNet trained here) with a fresh ArcFace head for the run's people.

use crate::io::checkpoint;
use crate::io::model_file::{self, ModelFile};
use crate::models::{Arch, Head, ModelSpec, Net};
use crate::nn::GpuBackend;
use anyhow::{bail, Result};
use std::path::Path;

/// The model a run from `--init` trains: the checkpoint's backbone with an
/// ArcFace head for `want`'s classes.
pub fn pretrained_spec(init: &Path, want: &ModelSpec) -> Result<ModelSpec> {
    let head = match want.head {
        Head::ArcFace { .. } => want.head,
        Head::Softmax => bail!("--init: fine-tuning uses an ArcFace head (--head arcface)"),
    };
    match model_file::read(init)? {
        ModelFile::Graph { def, .. } => {
            Ok(ModelSpec { arch: Arch::Imported, input: def.input_size, classes: want.classes, head })
        }
        ModelFile::Checkpoint { meta, .. } if !meta.model.has_embedding() => {
            let name = meta.model.build().map_or_else(|| format!("{:?}", meta.model.arch), |b| b.graph.source);
            bail!(
                "--init {}: {name} is a classifier without an embedding layer: no backbone to fine-tune",
                init.display()
            )
        }
        ModelFile::Checkpoint { meta, .. } => {
            Ok(ModelSpec { arch: meta.model.arch, input: meta.model.input, classes: want.classes, head })
        }
    }
}

/// The network of `pretrained_spec`, its head freshly initialised (seeded).
pub fn pretrained<'g>(b: &mut GpuBackend<'g>, init: &Path, spec: ModelSpec, seed: u64) -> Result<Net<GpuBackend<'g>>> {
    let (meta, file) = match model_file::read(init)? {
        ModelFile::Graph { def, file } => return Net::pretrained(b, spec, def, model_file::weights(file), seed),
        ModelFile::Checkpoint { meta, file } => (meta, file),
    };
    if let Some(def) = &meta.graph {
        return Net::pretrained(b, spec, def.clone(), checkpoint::backbone_weights(&file), seed);
    }
    let from = checkpoint::net_of(init, &meta, &file, b)?;
    let mut net = Net::init(b, spec, seed)?;
    for p in &from.params.params {
        if p.name.starts_with("head.") {
            continue;
        }
        if net.params.contains(&p.name) {
            net.params.set(&p.name, p.value.clone());
        } else {
            net.params.add(&p.name, p.value.clone(), p.trainable);
        }
    }
    Ok(net)
}
