//! The networks: MobileFaceNet with an ArcFace or softmax head, and
//! MiniNetwork. One definition, run on any `Backend`.

pub mod mininet;
pub mod mobilefacenet;

use crate::graph::{self, GraphDef};
use crate::kernels::arcface::{ArcFace, Margin};
use crate::kernels::sgd::Sgd;
use crate::nn::{Backend, Block, ConvBnCache, Init, ParamSpec, ParamStore};
use anyhow::{bail, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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

    fn embedding(&self) -> usize {
        match self.head {
            Head::ArcFace { .. } => EMBEDDING,
            Head::Softmax => self.classes,
        }
    }

    fn blocks(&self) -> Vec<Block> {
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
    let mut rng = StdRng::seed_from_u64(seed);
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

/// What a backbone's training forward pass saved.
enum Backbone<T> {
    Blocks(Vec<Vec<ConvBnCache<T>>>),
    Graph(graph::Saved<T>),
}

enum Cache<B: Backend> {
    MobileFaceNet { blocks: Backbone<B::T>, head: Option<(ArcFace, B::ArcCache, B::T)> },
    MiniNet { chunks: Vec<mininet::ChunkCache<B::T>> },
}

/// A network on a backend: its spec, parameters, and what the last training
/// forward pass saved for the backward pass.
pub struct Net<B: Backend> {
    pub spec: ModelSpec,
    pub params: ParamStore<B::T>,
    cache: Option<Cache<B>>,
    /// MobileFaceNet: the backbone output of the last training forward pass.
    pub last_embedding: Option<B::T>,
    /// `Arch::Imported`: the backbone's layers (weights are `backbone.<name>`).
    pub graph: Option<Arc<GraphDef>>,
    /// Train the head only: no backbone gradients, no backbone updates.
    pub freeze_backbone: bool,
}

impl<B: Backend> Net<B> {
    /// A fresh network with seeded initial weights.
    pub fn init(b: &mut B, spec: ModelSpec, seed: u64) -> Result<Net<B>> {
        spec.validate()?;
        let mut params = ParamStore::default();
        for (p, v) in init_values(&spec, seed) {
            let t = b.upload(&v, &p.shape)?;
            params.add(&p.name, t, p.trainable);
        }
        Ok(Net { spec, params, cache: None, last_embedding: None, graph: None, freeze_backbone: false })
    }

    /// A network from named values (a checkpoint or a golden file). Every
    /// parameter of the spec must be present with its exact shape.
    pub fn from_values(
        b: &mut B,
        spec: ModelSpec,
        mut get: impl FnMut(&str) -> Option<(Vec<usize>, Vec<f32>)>,
    ) -> Result<Net<B>> {
        spec.validate()?;
        let mut params = ParamStore::default();
        for p in spec.param_specs() {
            let Some((shape, v)) = get(&p.name) else { bail!("missing parameter `{}`", p.name) };
            if shape != p.shape {
                bail!("parameter `{}` has shape {shape:?}, the {:?} model needs {:?}", p.name, spec.arch, p.shape);
            }
            let t = b.upload(&v, &shape)?;
            params.add(&p.name, t, p.trainable);
        }
        Ok(Net { spec, params, cache: None, last_embedding: None, graph: None, freeze_backbone: false })
    }

    /// An imported backbone (`graph` and its weights, by graph name) with a
    /// fresh, seeded ArcFace head for `spec.classes` people.
    pub fn pretrained(
        b: &mut B,
        spec: ModelSpec,
        graph: GraphDef,
        weights: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
        seed: u64,
    ) -> Result<Net<B>> {
        if spec.arch != Arch::Imported {
            bail!("Net::pretrained builds imported networks");
        }
        let mut net = Net::init(b, spec, seed)?;
        for (name, shape, v) in weights {
            let t = b.upload(&v, &shape)?;
            net.params.add(&format!("{BACKBONE}{name}"), t, true);
        }
        net.graph = Some(Arc::new(graph));
        Ok(net)
    }

    fn backbone(&mut self, b: &mut B, x: &B::T, train: bool) -> Result<(B::T, Backbone<B::T>)> {
        if let Some(g) = self.graph.clone() {
            let params = &self.params;
            let w = |n: &str| -> Result<B::T> {
                let key = format!("{BACKBONE}{n}");
                if !params.contains(&key) {
                    bail!("no backbone weight `{n}`");
                }
                Ok(params.get(&key).clone())
            };
            let (emb, saved) = graph::run(&g, b, &w, x, train)?;
            return Ok((emb, Backbone::Graph(saved.unwrap_or_else(graph::Saved::empty))));
        }
        let mut h = x.clone();
        let mut caches = Vec::new();
        for block in self.spec.blocks() {
            let (y, c) = block.forward(b, &self.params, &h, train)?;
            if train {
                caches.push(c);
            }
            h = y;
        }
        let n = b.shape(x)[0];
        let emb = b.reshape(&h, &[n, self.spec.embedding()])?;
        Ok((emb, Backbone::Blocks(caches)))
    }

    fn check_input(&self, b: &B, x: &B::T) -> Result<usize> {
        let s = b.shape(x);
        let want = [3, self.spec.input, self.spec.input];
        if s.len() != 4 || s[1..] != want {
            bail!("input of shape {s:?}; the model takes (N, 3, {}, {})", self.spec.input, self.spec.input);
        }
        Ok(s[0])
    }

    /// MiniNetwork over the batch in chunks that fit one binding; logits
    /// joined, and each chunk's saved state.
    fn mininet_forward(&self, b: &mut B, x: &B::T, n: usize) -> Result<(B::T, Vec<mininet::ChunkCache<B::T>>)> {
        let chunk = mininet::chunk_size(self.spec.input, b.max_binding_bytes());
        let (mut logits, mut chunks) = (Vec::new(), Vec::new());
        for start in (0..n).step_by(chunk) {
            let len = chunk.min(n - start);
            let xc = if len == n { x.clone() } else { b.slice_batch(x, start, len)? };
            let (l, c) = mininet::forward_chunk(b, &self.params, &xc, self.spec.classes)?;
            logits.push(l);
            chunks.push(c);
        }
        let logits = if logits.len() == 1 { logits.pop().expect("one chunk") } else { b.concat_batch(&logits)? };
        Ok((logits, chunks))
    }

    /// Training-mode forward pass: logits with the ArcFace margin on the true
    /// class. Saves what `backward` needs.
    pub fn forward_train(&mut self, b: &mut B, x: &B::T, labels: &B::T) -> Result<B::T> {
        let n = self.check_input(b, x)?;
        match self.spec.arch {
            Arch::MobileFaceNet | Arch::Imported => {
                let (emb, blocks) = self.backbone(b, x, true)?;
                self.last_embedding = Some(emb.clone());
                let (logits, head) = match self.spec.head {
                    Head::ArcFace { s, m } => {
                        let a = ArcFace { b: n, d: EMBEDDING, c: self.spec.classes, margin: Margin { s, m } };
                        let (logits, cache) = b.arcface(&a, &emb, self.params.get("head.weight"), labels)?;
                        (logits, Some((a, cache, labels.clone())))
                    }
                    Head::Softmax => (emb, None),
                };
                self.cache = Some(Cache::MobileFaceNet { blocks, head });
                Ok(logits)
            }
            Arch::MiniNet => {
                let (logits, chunks) = self.mininet_forward(b, x, n)?;
                self.cache = Some(Cache::MiniNet { chunks });
                Ok(logits)
            }
        }
    }

    /// Gradients of every parameter from d loss / d logits (into `params`).
    pub fn backward(&mut self, b: &mut B, dlogits: &B::T) -> Result<()> {
        self.params.zero_grads();
        let Some(cache) = self.cache.take() else { bail!("backward without a training forward pass") };
        match cache {
            Cache::MobileFaceNet { blocks, head } => {
                let demb = match head {
                    Some((a, cache, labels)) => {
                        let (de, dw) = b.arcface_backward(&a, &cache, &labels, dlogits)?;
                        self.params.add_grad(b, "head.weight", dw)?;
                        de
                    }
                    None => dlogits.clone(),
                };
                if self.freeze_backbone {
                    return Ok(());
                }
                match blocks {
                    Backbone::Blocks(blocks) => {
                        let specs = self.spec.blocks();
                        let last = specs.last().and_then(|bl| bl.layers.last()).map_or(1, |l| l.cout);
                        let n = b.shape(&demb)[0];
                        let mut d = b.reshape(&demb, &[n, last, 1, 1])?;
                        for (block, c) in specs.iter().zip(&blocks).rev() {
                            d = block.backward(b, &mut self.params, c, &d)?;
                        }
                    }
                    Backbone::Graph(saved) => {
                        let g = self.graph.clone().expect("a graph backbone has its graph");
                        let values: std::collections::HashMap<String, B::T> = self
                            .params
                            .params
                            .iter()
                            .filter_map(|p| p.name.strip_prefix(BACKBONE).map(|n| (n.to_string(), p.value.clone())))
                            .collect();
                        let w = |n: &str| values.get(n).cloned().ok_or_else(|| anyhow::anyhow!("no weight `{n}`"));
                        let params = &mut self.params;
                        let mut grad = |b: &mut B, n: &str, g: B::T| params.add_grad(b, &format!("{BACKBONE}{n}"), g);
                        graph::backward(&g, b, &w, &saved, &demb, &mut grad)?;
                    }
                }
            }
            Cache::MiniNet { chunks } => {
                let mut start = 0;
                let whole = chunks.len() == 1;
                for c in &chunks {
                    let len = b.shape(c.input())[0];
                    let dl = if whole { dlogits.clone() } else { b.slice_batch(dlogits, start, len)? };
                    mininet::backward_chunk(b, &mut self.params, c, &dl)?;
                    start += len;
                }
            }
        }
        Ok(())
    }

    /// Eval-mode logits: ArcFace without the margin (s * cos), running BN statistics.
    pub fn logits(&mut self, b: &mut B, x: &B::T) -> Result<B::T> {
        self.logits_with(b, x, false)
    }

    /// Logits as `logits`, but with `batch_stats` batch norm normalises with
    /// the statistics of this batch (a diagnostic for lagging running
    /// statistics; the running statistics are updated as in training).
    pub fn logits_with(&mut self, b: &mut B, x: &B::T, batch_stats: bool) -> Result<B::T> {
        let n = self.check_input(b, x)?;
        match self.spec.arch {
            Arch::MobileFaceNet | Arch::Imported => {
                let (emb, _) = self.backbone(b, x, batch_stats)?;
                match self.spec.head {
                    Head::ArcFace { s, .. } => {
                        let a = ArcFace { b: n, d: EMBEDDING, c: self.spec.classes, margin: Margin { s, m: 0.0 } };
                        let labels = b.labels(&vec![0; n])?;
                        Ok(b.arcface(&a, &emb, self.params.get("head.weight"), &labels)?.0)
                    }
                    Head::Softmax => Ok(emb),
                }
            }
            Arch::MiniNet => Ok(self.mininet_forward(b, x, n)?.0),
        }
    }

    /// L2-normalised embeddings (eval mode).
    pub fn embed(&mut self, b: &mut B, x: &B::T) -> Result<B::T> {
        let emb = self.embed_raw(b, x)?;
        b.l2norm(&emb)
    }

    /// The backbone's output (eval mode), before normalisation.
    pub fn embed_raw(&mut self, b: &mut B, x: &B::T) -> Result<B::T> {
        self.check_input(b, x)?;
        if self.spec.arch == Arch::MiniNet {
            bail!("MiniNetwork is a classifier without an embedding layer; use predict");
        }
        Ok(self.backbone(b, x, false)?.0)
    }

    /// One SGD step on a batch: forward, mean cross-entropy, backward, update.
    /// Returns the loss tensor ([1]) and the logits, not read back.
    pub fn train_step(&mut self, b: &mut B, x: &B::T, labels: &B::T, h: &Sgd) -> Result<(B::T, B::T)> {
        let logits = self.forward_train(b, x, labels)?;
        let (loss, probs) = b.cross_entropy(&logits, labels)?;
        let dlogits = b.cross_entropy_backward(&probs, labels)?;
        self.backward(b, &dlogits)?;
        for i in 0..self.params.params.len() {
            if !self.params.params[i].trainable
                || (self.freeze_backbone && self.params.params[i].name.starts_with(BACKBONE))
            {
                continue;
            }
            if self.params.params[i].velocity.is_none() {
                let shape = b.shape(&self.params.params[i].value).to_vec();
                self.params.params[i].velocity = Some(b.zeros(&shape)?);
            }
            let p = &self.params.params[i];
            let g = p.grad.as_ref().ok_or_else(|| anyhow::anyhow!("no gradient for `{}`", p.name))?;
            b.sgd(h, &p.value, g, p.velocity.as_ref().expect("velocity set above"))?;
        }
        Ok((loss, logits))
    }
}
