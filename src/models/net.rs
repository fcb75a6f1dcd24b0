//! A network on a backend: forward (training and eval), backward and the
//! SGD step, for every architecture.

use super::graph::{self, GraphDef};
use super::{init_values, mininet, Arch, Head, ModelSpec, BACKBONE, EMBEDDING};
use crate::kernels::arcface::{ArcFace, Margin};
use crate::kernels::sgd::Sgd;
use crate::nn::{Backend, ConvBnCache, Folded, ParamStore};
use anyhow::{bail, Result};
use std::sync::Arc;

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
    /// Batch norms folded into the convolutions for eval mode
    /// (`fold_batch_norms`); dropped by any train-mode pass.
    folded: Option<Folded<B::T>>,
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
        Ok(Net { spec, params, cache: None, last_embedding: None, graph: None, freeze_backbone: false, folded: None })
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
        Ok(Net { spec, params, cache: None, last_embedding: None, graph: None, freeze_backbone: false, folded: None })
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
        if train {
            // Batch statistics update the running ones the folds were made from.
            self.folded = None;
        }
        let mut h = x.clone();
        let mut caches = Vec::new();
        for block in self.spec.blocks() {
            let (y, c) = block.forward(b, &self.params, &h, train, self.folded.as_ref())?;
            if train {
                caches.push(c);
            }
            h = y;
        }
        let n = b.shape(x)[0];
        let emb = b.reshape(&h, &[n, self.spec.embedding()])?;
        Ok((emb, Backbone::Blocks(caches)))
    }

    /// Folds every batch norm into its convolution for eval mode (inference:
    /// one convolution with a bias instead of a convolution and a
    /// normalisation). A train-mode pass drops the folded weights; values
    /// set in `params` afterwards need another fold.
    pub fn fold_batch_norms(&mut self, b: &mut B) -> Result<()> {
        pollster::block_on(self.fold_batch_norms_async(b))
    }

    /// `fold_batch_norms` as a future (it reads the weights back).
    pub async fn fold_batch_norms_async(&mut self, b: &mut B) -> Result<()> {
        let mut f = Folded::new();
        for block in self.spec.blocks() {
            for l in &block.layers {
                f.insert(l.name.clone(), l.fold(b, &self.params).await?);
            }
        }
        self.folded = Some(f);
        Ok(())
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
                        for (i, (block, c)) in specs.iter().zip(&blocks).enumerate().rev() {
                            match block.backward(b, &mut self.params, c, &d, i > 0)? {
                                Some(next) => d = next,
                                None => break,
                            }
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
        let frozen = self.freeze_backbone;
        self.params.sgd_step(b, h, |name| !(frozen && name.starts_with(BACKBONE)))?;
        Ok((loss, logits))
    }
}
