//! The networks, each a graph (`graph`): MobileFaceNet with an ArcFace or
//! softmax head, MiniNetwork and MTCNN's three networks come from builders,
//! imported networks from ONNX. `ModelSpec` fixes a trained network's shape;
//! `Net` is a graph, a head and parameters on any `Backend`.

pub mod builder;
pub mod graph;
pub mod mininet;
pub mod mobilefacenet;
pub mod mtcnn;
mod net;

pub use net::Net;

use crate::nn::{Init, ParamSpec};
use anyhow::{bail, Result};
use builder::Built;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Name prefix of backbone weights: MobileFaceNet's (PyTorch names) and an
/// imported network's (`backbone.<graph name>`); `freeze_backbone` skips them.
pub const BACKBONE: &str = "backbone.";

/// The ArcFace head's weight: one row per person.
pub const HEAD_WEIGHT: &str = "head.weight";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    MobileFaceNet,
    MiniNet,
    /// An imported embedding network (`arcface import`) with an ArcFace head;
    /// the graph is in the checkpoint's metadata.
    Imported,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Head {
    /// Class-weight matrix, logits s*cos(theta + m) for the true class.
    ArcFace { s: f64, m: f64 },
    /// The graph's output has one value per class; plain cross-entropy.
    Softmax,
}

/// Everything that fixes a network's shape (stored in checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    /// Input height = width.
    pub input: usize,
    pub classes: usize,
    pub head: Head,
}

/// Defaults: s = 32 and m = 0.5 (see the models issue's note on the choice).
pub const DEFAULT_ARCFACE: Head = Head::ArcFace { s: 32.0, m: 0.5 };
/// MobileFaceNet's embedding width.
pub const EMBEDDING: usize = 128;

impl ModelSpec {
    pub fn validate(&self) -> Result<()> {
        if self.classes == 0 {
            bail!("a model needs at least one class");
        }
        match self.arch {
            Arch::MobileFaceNet if self.input != 112 => bail!("MobileFaceNet takes 112x112 inputs, not {}", self.input),
            Arch::MiniNet if !matches!(self.head, Head::Softmax) => bail!("MiniNetwork has no ArcFace head"),
            Arch::MiniNet if self.input == 0 => bail!("input size must be positive"),
            Arch::Imported if !matches!(self.head, Head::ArcFace { .. }) => {
                bail!("an imported network is fine-tuned with an ArcFace head")
            }
            _ => Ok(()),
        }
    }

    /// The network's graph and parameters from its builder; `None` for an
    /// imported network, whose graph comes with its weights. (The one place
    /// that tells the architectures apart.)
    pub fn build(&self) -> Option<Built> {
        let softmax = matches!(self.head, Head::Softmax);
        match self.arch {
            Arch::MobileFaceNet => Some(mobilefacenet::build(if softmax { self.classes } else { EMBEDDING }, softmax)),
            Arch::MiniNet => Some(mininet::build(self.input, self.classes)),
            Arch::Imported => None,
        }
    }

    /// Whether the graph's output is a face embedding (MiniNetwork's is its
    /// logits over flattened pixels' features, not an embedding).
    pub fn has_embedding(&self) -> bool {
        self.arch != Arch::MiniNet
    }

    /// Every parameter of a built network, the head's included (an imported
    /// network's come with its graph: `Net::pretrained`).
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let Some(built) = self.build() else { return Vec::new() };
        let width = built_shapes(&built).output_width();
        let mut v = built.params;
        v.extend(head_spec(self, width));
        v
    }

    /// Learned values (running statistics not counted).
    pub fn parameter_count(&self) -> usize {
        self.param_specs().iter().filter(|p| p.trainable).map(|p| p.shape.iter().product::<usize>()).sum()
    }

    /// Per layer: name, output shape per image and multiply-adds for one
    /// image, read from the graph; the ArcFace head last.
    pub fn layer_table(&self) -> Vec<graph::LayerRow> {
        let Some(built) = self.build() else { return Vec::new() };
        let shapes = built_shapes(&built);
        let mut rows = built.graph.layer_table(&shapes);
        if let Head::ArcFace { .. } = self.head {
            rows.push(("head (ArcFace)".into(), vec![self.classes], shapes.output_width() * self.classes));
        }
        rows
    }

    pub fn macs(&self) -> usize {
        self.layer_table().iter().map(|r| r.2).sum()
    }
}

/// A built graph's shapes, from its parameters' shapes (a builder's graph
/// fits its own parameters: tests/one_graph.rs and every model test).
fn built_shapes(b: &Built) -> graph::Shapes {
    let shape = |n: &str| b.params.iter().find(|p| p.name == n).map(|p| p.shape.clone());
    graph::infer(&b.graph, b.graph.input_size, &shape).expect("a builder's graph fits its parameters")
}

/// The ArcFace head's weight for an embedding `width` wide (none for softmax).
pub fn head_spec(spec: &ModelSpec, width: usize) -> Option<ParamSpec> {
    let Head::ArcFace { .. } = spec.head else { return None };
    Some(ParamSpec {
        name: HEAD_WEIGHT.into(),
        shape: vec![spec.classes, width],
        init: Init::XavierUniform { fan_in: width, fan_out: spec.classes },
        trainable: true,
    })
}

/// Initial values of every parameter, seeded.
pub fn init_values(specs: Vec<ParamSpec>, seed: u64) -> Vec<(ParamSpec, Vec<f32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    specs
        .into_iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            let v: Vec<f32> = match p.init {
                Init::Const(c) => vec![c; n],
                Init::DefaultUniform { fan_in } => {
                    let a = 1.0 / (fan_in as f32).sqrt();
                    (0..n).map(|_| rng.random_range(-a..a)).collect()
                }
                Init::XavierUniform { fan_in, fan_out } => {
                    let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
                    (0..n).map(|_| rng.random_range(-a..a)).collect()
                }
                Init::KaimingNormal { fan_in } => {
                    let std = (2.0 / fan_in as f64).sqrt();
                    (0..n)
                        .map(|_| {
                            // Box-Muller
                            let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
                            (std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
                        })
                        .collect()
                }
            };
            (p, v)
        })
        .collect()
}
