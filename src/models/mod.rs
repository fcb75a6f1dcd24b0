//! The networks: MobileFaceNet with an ArcFace or softmax head, MiniNetwork,
//! and imported graphs with an ArcFace head. `ModelSpec` fixes a network's
//! shape; `Net` runs it on any `Backend`.

pub mod graph;
pub mod mininet;
pub mod mobilefacenet;
mod net;

pub use net::Net;

use crate::nn::{Block, Init, ParamSpec};
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Name prefix of backbone weights: MobileFaceNet's (PyTorch names) and an
/// imported network's (`backbone.<graph name>`); `freeze_backbone` skips them.
pub const BACKBONE: &str = "backbone.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    MobileFaceNet,
    MiniNet,
    /// An imported embedding network (`arcface import`) with an ArcFace head;
    /// the layers are in the checkpoint's graph description.
    Imported,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Head {
    /// Class-weight matrix, logits s*cos(theta + m) for the true class.
    ArcFace { s: f64, m: f64 },
    /// The embedding layer has one output per class; plain cross-entropy.
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

    pub(crate) fn embedding(&self) -> usize {
        match self.head {
            Head::ArcFace { .. } => EMBEDDING,
            Head::Softmax => self.classes,
        }
    }

    pub(crate) fn blocks(&self) -> Vec<Block> {
        match self.arch {
            Arch::MobileFaceNet => mobilefacenet::blocks(self.embedding()),
            Arch::MiniNet | Arch::Imported => Vec::new(),
        }
    }

    pub fn param_specs(&self) -> Vec<ParamSpec> {
        match self.arch {
            // The head only: the backbone's weights come with its graph.
            Arch::MobileFaceNet | Arch::Imported => {
                let mut v: Vec<ParamSpec> =
                    self.blocks().iter().flat_map(|b| b.layers.iter().flat_map(|l| l.param_specs())).collect();
                if let Head::ArcFace { .. } = self.head {
                    let init = Init::XavierUniform { fan_in: EMBEDDING, fan_out: self.classes };
                    v.push(ParamSpec {
                        name: "head.weight".into(),
                        shape: vec![self.classes, EMBEDDING],
                        init,
                        trainable: true,
                    });
                }
                v
            }
            Arch::MiniNet => mininet::param_specs(self.input, self.classes),
        }
    }

    /// Learned values (running statistics not counted).
    pub fn parameter_count(&self) -> usize {
        self.param_specs().iter().filter(|p| p.trainable).map(|p| p.shape.iter().product::<usize>()).sum()
    }

    /// Per layer: name, output shape (C, H, W) and multiply-adds for one image.
    pub fn layer_table(&self) -> Vec<(String, [usize; 3], usize)> {
        let mut rows = Vec::new();
        match self.arch {
            Arch::MobileFaceNet | Arch::Imported => {
                let mut hw = self.input;
                for b in self.blocks() {
                    for l in &b.layers {
                        let c = l.conv(1, (hw, hw));
                        let (ho, _) = c.out_hw();
                        rows.push((l.name.clone(), [l.cout, ho, ho], c.macs() as usize));
                        hw = ho;
                    }
                }
                if let Head::ArcFace { .. } = self.head {
                    rows.push(("head (ArcFace)".into(), [self.classes, 1, 1], EMBEDDING * self.classes));
                }
            }
            Arch::MiniNet => {
                for (i, c) in mininet::convs(1, self.input).iter().enumerate() {
                    rows.push((format!("features.{}", 2 * i), [c.cout, self.input, self.input], c.macs() as usize));
                }
                let inp = 128 * self.input * self.input;
                rows.push(("fc".into(), [self.classes, 1, 1], inp * self.classes));
            }
        }
        rows
    }

    pub fn macs(&self) -> usize {
        self.layer_table().iter().map(|r| r.2).sum()
    }
}

/// Initial values of every parameter, seeded.
pub fn init_values(spec: &ModelSpec, seed: u64) -> Vec<(ParamSpec, Vec<f32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    spec.param_specs()
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
