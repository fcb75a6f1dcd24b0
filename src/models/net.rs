//! A network on a backend: a graph (the backbone, or the whole classifier),
//! a head and the parameters. Forward in training and eval mode, backward
//! and the SGD step are the executor's over the graph, then the head's.

use super::graph::{GraphDef, Mode, Program, Saved};
use super::{head_spec, init_values, Head, ModelSpec, BACKBONE, HEAD_WEIGHT};
use crate::kernels::arcface::{ArcFace, Margin};
use crate::kernels::sgd::Sgd;
use crate::nn::{Backend, ParamStore};
use anyhow::{bail, Context, Result};
use std::sync::Arc;

/// What the last training forward pass saved for the backward pass.
struct Cache<B: Backend> {
    graph: Vec<(Saved<B::T>, usize)>,
    head: Option<(ArcFace, B::ArcCache, B::T)>,
}

/// A network on a backend: its spec, graph, parameters, and what the last
/// training forward pass saved for the backward pass.
pub struct Net<B: Backend> {
    pub spec: ModelSpec,
    pub params: ParamStore<B::T>,
    program: Program<B::T>,
    /// Graph weight `n` is parameter `prefix + n`: "" for a network built
    /// here (its graph uses the parameter names), `backbone.` for an
    /// imported one (its graph keeps the names it was imported with).
    prefix: &'static str,
    cache: Option<Cache<B>>,
    /// The embedding of the last training forward pass (none for a
    /// classifier without an embedding layer).
    pub last_embedding: Option<B::T>,
    /// Train the head only: the backbone runs in eval mode (its running
    /// statistics fixed), no backbone gradients, no backbone updates.
    pub freeze_backbone: bool,
}

impl<B: Backend> Net<B> {
    /// A fresh network with seeded initial weights.
    pub fn init(b: &mut B, spec: ModelSpec, seed: u64) -> Result<Net<B>> {
        spec.validate()?;
        let built = spec.build().context("an imported network starts from its weights (Net::pretrained)")?;
        let mut params = ParamStore::default();
        for (p, v) in init_values(spec.param_specs(), seed) {
            let t = b.upload(&v, &p.shape)?;
            params.add(&p.name, t, p.trainable);
        }
        Net::assemble(b, spec, built.graph, "", params)
    }

    /// A network from named values (a checkpoint or a golden file). Every
    /// parameter of the spec must be present with its exact shape.
    pub fn from_values(
        b: &mut B,
        spec: ModelSpec,
        mut get: impl FnMut(&str) -> Option<(Vec<usize>, Vec<f32>)>,
    ) -> Result<Net<B>> {
        spec.validate()?;
        let built = spec.build().context("an imported network starts from its weights (Net::pretrained)")?;
        let mut params = ParamStore::default();
        for p in spec.param_specs() {
            let Some((shape, v)) = get(&p.name) else { bail!("missing parameter `{}`", p.name) };
            if shape != p.shape {
                bail!("parameter `{}` has shape {shape:?}, the {:?} model needs {:?}", p.name, spec.arch, p.shape);
            }
            let t = b.upload(&v, &shape)?;
            params.add(&p.name, t, p.trainable);
        }
        Net::assemble(b, spec, built.graph, "", params)
    }

    /// An imported backbone (`graph` and its weights, by graph name) with a
    /// fresh, seeded ArcFace head for `spec.classes` people, as wide as the
    /// graph's embedding. Running statistics are not trained by SGD.
    pub fn pretrained(
        b: &mut B,
        spec: ModelSpec,
        graph: GraphDef,
        weights: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
        seed: u64,
    ) -> Result<Net<B>> {
        spec.validate()?;
        if spec.build().is_some() {
            bail!("Net::pretrained builds imported networks");
        }
        let mut params = ParamStore::default();
        for (name, shape, v) in weights {
            let t = b.upload(&v, &shape)?;
            params.add(&format!("{BACKBONE}{name}"), t, !graph.is_statistic(&name));
        }
        let mut net = Net::assemble(b, spec, graph, BACKBONE, params)?;
        if let Some(head) = head_spec(&spec, net.program.output_width()) {
            for (p, v) in init_values(vec![head], seed) {
                let t = b.upload(&v, &p.shape)?;
                net.params.add(&p.name, t, p.trainable);
            }
        }
        Ok(net)
    }

    fn assemble(
        b: &B,
        spec: ModelSpec,
        graph: GraphDef,
        prefix: &'static str,
        params: ParamStore<B::T>,
    ) -> Result<Net<B>> {
        let shape = |n: &str| {
            let key = format!("{prefix}{n}");
            params.contains(&key).then(|| b.shape(params.get(&key)).to_vec())
        };
        let program = Program::new(Arc::new(graph), &shape)?;
        if let Head::Softmax = spec.head {
            if program.output_width() != spec.classes {
                bail!("a softmax classifier of {} classes with {} outputs", spec.classes, program.output_width());
            }
        }
        Ok(Net { spec, params, program, prefix, cache: None, last_embedding: None, freeze_backbone: false })
    }

    /// The graph (the backbone, or the whole classifier).
    pub fn graph(&self) -> &GraphDef {
        &self.program.def
    }

    /// An imported network's graph (what its checkpoint stores).
    pub fn imported_graph(&self) -> Option<&GraphDef> {
        (!self.prefix.is_empty()).then(|| self.graph())
    }

    /// The graph's output per image: the embedding width (or the classes).
    pub fn embedding_width(&self) -> usize {
        self.program.output_width()
    }

    /// Images per executor run so that no value outgrows `max_bytes` (a
    /// larger batch runs in parts; weight gradients add up over them).
    pub fn images_per_run(&self, max_bytes: u64) -> usize {
        self.program.images_per_run(max_bytes)
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
        let (params, prefix) = (&self.params, self.prefix);
        let w = |n: &str| weight(params, prefix, n);
        self.program.fold(b, &w).await
    }

    fn check_input(&self, b: &B, x: &B::T) -> Result<usize> {
        let s = b.shape(x);
        let want = [3, self.spec.input, self.spec.input];
        if s.len() != 4 || s[1..] != want {
            bail!("input of shape {s:?}; the model takes (N, 3, {}, {})", self.spec.input, self.spec.input);
        }
        Ok(s[0])
    }

    /// The graph's output on a batch, in parts that fit one binding.
    fn run(&mut self, b: &mut B, x: &B::T, mode: Mode) -> Result<(B::T, Vec<(Saved<B::T>, usize)>)> {
        if mode == Mode::Train {
            // Batch statistics update the running ones the folds were made from.
            self.program.unfold();
        }
        let chunk = self.program.images_per_run(b.max_binding_bytes());
        let (params, prefix) = (&self.params, self.prefix);
        let w = |n: &str| weight(params, prefix, n);
        self.program.forward(b, &w, x, mode, chunk)
    }

    fn arcface(&self, n: usize, s: f64, m: f64) -> ArcFace {
        ArcFace { b: n, d: self.embedding_width(), c: self.spec.classes, margin: Margin { s, m } }
    }

    /// Training-mode forward pass: logits with the ArcFace margin on the true
    /// class. Saves what `backward` needs.
    pub fn forward_train(&mut self, b: &mut B, x: &B::T, labels: &B::T) -> Result<B::T> {
        let n = self.check_input(b, x)?;
        let mode = if self.freeze_backbone { Mode::Eval } else { Mode::Train };
        let (emb, graph) = self.run(b, x, mode)?;
        self.last_embedding = self.spec.has_embedding().then(|| emb.clone());
        let (logits, head) = match self.spec.head {
            Head::ArcFace { s, m } => {
                let a = self.arcface(n, s, m);
                let (logits, cache) = b.arcface(&a, &emb, self.params.get(HEAD_WEIGHT), labels)?;
                (logits, Some((a, cache, labels.clone())))
            }
            Head::Softmax => (emb, None),
        };
        self.cache = Some(Cache { graph, head });
        Ok(logits)
    }

    /// Gradients of every parameter from d loss / d logits (into `params`).
    pub fn backward(&mut self, b: &mut B, dlogits: &B::T) -> Result<()> {
        self.params.zero_grads();
        let Some(cache) = self.cache.take() else { bail!("backward without a training forward pass") };
        let demb = match cache.head {
            Some((a, hc, labels)) => {
                let (de, dw) = b.arcface_backward(&a, &hc, &labels, dlogits)?;
                self.params.add_grad(b, HEAD_WEIGHT, dw)?;
                de
            }
            None => dlogits.clone(),
        };
        if self.freeze_backbone {
            return Ok(());
        }
        // Gradients are collected, then stored: the weights are read while
        // the backward pass runs.
        let (params, prefix) = (&self.params, self.prefix);
        let w = |n: &str| weight(params, prefix, n);
        let mut grads = Vec::new();
        let mut grad = |_: &mut B, n: &str, g: B::T| {
            grads.push((format!("{prefix}{n}"), g));
            Ok(())
        };
        self.program.backward(b, &w, &cache.graph, &demb, &mut grad)?;
        for (name, g) in grads {
            self.params.add_grad(b, &name, g)?;
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
        let (emb, _) = self.run(b, x, if batch_stats { Mode::Train } else { Mode::Eval })?;
        match self.spec.head {
            Head::ArcFace { s, .. } => {
                let a = self.arcface(n, s, 0.0);
                let labels = b.labels(&vec![0; n])?;
                Ok(b.arcface(&a, &emb, self.params.get(HEAD_WEIGHT), &labels)?.0)
            }
            Head::Softmax => Ok(emb),
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
        if !self.spec.has_embedding() {
            bail!("{} is a classifier without an embedding layer; use predict", self.graph().source);
        }
        Ok(self.run(b, x, Mode::Eval)?.0)
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

/// Graph weight `n` from the parameters.
fn weight<T: Clone>(params: &ParamStore<T>, prefix: &str, n: &str) -> Result<T> {
    let key = format!("{prefix}{n}");
    if !params.contains(&key) {
        bail!("no weight `{key}`");
    }
    Ok(params.get(&key).clone())
}
