//! Every network is a graph: a list of ops over named values and weights
//! (`GraphDef`), written by a builder (MobileFaceNet, MiniNetwork, MTCNN's
//! three networks) or read from ONNX (`io::onnx_import`). One executor runs
//! them all (`run`, `backward`); `passes` rewrite a graph for training
//! (batch norm fused with what follows) and inference (batch norm folded,
//! activations and residual adds done by the layer before them);
//! `shapes` infers every value's shape, from which layer tables, chunking
//! and the embedding width are read. `Program` is a graph readied for the
//! executor on a backend.

mod op;
pub mod passes;
mod run;
pub mod shapes;

pub use op::{FusedAct, Op, Window};
pub use run::{backward, run, Mode, Saved, Weights};
pub use shapes::{infer, Shapes};

use crate::data::input::Normalization;
use crate::nn::Backend;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphDef {
    pub format: u32,
    /// Where it came from: an imported file's name, or the builder's.
    pub source: String,
    pub input: String,
    pub output: String,
    /// Input height = width.
    pub input_size: usize,
    pub normalization: Normalization,
    pub ops: Vec<Op>,
    /// Named column ranges of the output, where its columns mean different
    /// things (MTCNN's face scores, box offsets and landmarks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<OutputPart>,
}

/// Columns `start..start + len` of a graph's output, by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputPart {
    pub name: String,
    pub start: usize,
    pub len: usize,
}

impl OutputPart {
    pub fn new(name: &str, start: usize, len: usize) -> OutputPart {
        OutputPart { name: name.into(), start, len }
    }
}

/// One row of a layer table: an op that computes (a convolution, a linear
/// layer, a pooling), its output shape per image and multiply-adds.
pub type LayerRow = (String, Vec<usize>, usize);

impl GraphDef {
    /// The layer table: every convolution, linear layer and pooling, named
    /// by the value it writes.
    pub fn layer_table(&self, shapes: &Shapes) -> Vec<LayerRow> {
        self.ops
            .iter()
            .zip(&shapes.ops)
            .filter(|(op, _)| {
                matches!(op, Op::Conv { .. } | Op::Linear { .. } | Op::GlobalAvgPool { .. } | Op::MaxPool { .. })
            })
            .map(|(op, s)| (op.output().to_string(), s.output.clone(), s.macs))
            .collect()
    }

    /// The output columns named `name`.
    pub fn part(&self, name: &str) -> Result<std::ops::Range<usize>> {
        let p = self
            .parts
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("{}: no output `{name}`", self.source))?;
        Ok(p.start..p.start + p.len)
    }

    /// Every weight the ops read, in order of first use.
    pub fn weight_names(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.ops.iter().flat_map(|op| op.weights()).filter(|w| seen.insert(*w)).collect()
    }

    /// Whether `name` is a statistic (a batch norm's running mean or
    /// variance), which training updates and SGD does not.
    pub fn is_statistic(&self, name: &str) -> bool {
        self.ops.iter().any(|op| op.statistics().contains(&name))
    }
}

/// A graph readied for the executor: its shapes, its training form (batch
/// norms fused with the PReLU and add after them), its eval form (layers
/// finishing their outputs with the activation and add after them) and,
/// once `fold` has run, its inference form: batch norms folded, then
/// epilogues, with the folded weights.
pub struct Program<T> {
    pub def: Arc<GraphDef>,
    pub shapes: Shapes,
    fused: GraphDef,
    eval: GraphDef,
    folded: Option<(GraphDef, HashMap<String, T>)>,
}

impl<T: Clone> Program<T> {
    /// Checks the graph's shapes against its weights' (`weight_shape`).
    pub fn new(def: Arc<GraphDef>, weight_shape: &dyn Fn(&str) -> Option<Vec<usize>>) -> Result<Program<T>> {
        let shapes = infer(&def, def.input_size, weight_shape)
            .with_context(|| format!("the graph `{}` does not fit together", def.source))?;
        let fused = passes::fuse(&def);
        let eval = passes::epilogues(&fused);
        Ok(Program { def, shapes, fused, eval, folded: None })
    }

    /// The graph's output per image (the embedding width, or the classes).
    pub fn output_width(&self) -> usize {
        self.shapes.output_width()
    }

    /// Images per run so that no value outgrows `max_bytes`.
    pub fn images_per_run(&self, max_bytes: u64) -> usize {
        (max_bytes / self.shapes.largest_value_bytes()).max(1) as usize
    }

    /// Whether eval-mode runs use the folded form.
    pub fn is_folded(&self) -> bool {
        self.folded.is_some()
    }

    /// Drops the folded form (training changes what it was folded from).
    pub fn unfold(&mut self) {
        self.folded = None;
    }

    /// Folds every eval-mode batch norm into the layer before it
    /// (`passes::fold`); it reads the weights it folds back from `b`.
    pub async fn fold<B: Backend<T = T>>(&mut self, b: &mut B, w: Weights<'_, T>) -> Result<()> {
        let mut host = HashMap::new();
        for op in &self.def.ops {
            if let Op::BatchNorm { x, .. } = op {
                let producer = self.def.ops.iter().find(|p| p.output() == x);
                let names = op.weights().into_iter().chain(producer.map(|p| p.weights()).unwrap_or_default());
                for n in names {
                    let t = w(n)?;
                    let shape = b.shape(&t).to_vec();
                    host.insert(n.to_string(), (shape, b.download_async(&t).await));
                }
            }
        }
        let (def, new) = passes::fold(&self.def, &|n| host.get(n).cloned())?;
        let mut weights = HashMap::new();
        for (name, shape, values) in new {
            weights.insert(name, b.upload(&values, &shape)?);
        }
        self.folded = Some((passes::epilogues(&passes::fuse(&def)), weights));
        Ok(())
    }

    /// The graph on a batch, in parts of at most `chunk` images; the outputs
    /// joined, and in training mode each part's saved state and size.
    pub fn forward<B: Backend<T = T>>(
        &self,
        b: &mut B,
        w: Weights<'_, T>,
        x: &T,
        mode: Mode,
        chunk: usize,
    ) -> Result<(T, Vec<(Saved<T>, usize)>)> {
        let n = b.shape(x)[0];
        let (def, extra) = match (&self.folded, mode) {
            (Some((def, extra)), Mode::Eval) => (def, Some(extra)),
            (None, Mode::Eval) => (&self.eval, None),
            (_, Mode::Train) => (&self.fused, None),
        };
        let lookup = |name: &str| match extra.and_then(|e| e.get(name)) {
            Some(t) => Ok(t.clone()),
            None => w(name),
        };
        let (mut outs, mut saved) = (Vec::new(), Vec::new());
        for start in (0..n).step_by(chunk.max(1)) {
            let len = chunk.max(1).min(n - start);
            let part = if len == n { x.clone() } else { b.slice_batch(x, start, len)? };
            let (y, s) = run(def, b, &lookup, &part, mode)?;
            outs.push(y);
            saved.extend(s.map(|s| (s, len)));
        }
        let y = if outs.len() == 1 { outs.pop().expect("one part") } else { b.concat_batch(&outs)? };
        Ok((y, saved))
    }

    /// The weights' gradients for d output, part by part as `forward` ran.
    pub fn backward<B: Backend<T = T>>(
        &self,
        b: &mut B,
        w: Weights<'_, T>,
        saved: &[(Saved<T>, usize)],
        dout: &T,
        grad: &mut dyn FnMut(&mut B, &str, T) -> Result<()>,
    ) -> Result<()> {
        let mut start = 0;
        for (s, len) in saved {
            let d = if saved.len() == 1 { dout.clone() } else { b.slice_batch(dout, start, *len)? };
            backward(&self.fused, b, w, s, &d, grad)?;
            start += len;
        }
        Ok(())
    }
}

/// A graph on a backend with its weights uploaded (an imported network, or
/// one of MTCNN's): eval mode only.
pub struct GraphNet<B: Backend> {
    pub program: Program<B::T>,
    w: HashMap<String, B::T>,
}

impl<B: Backend> GraphNet<B> {
    /// The graph with its weights (graph name, shape, values) uploaded.
    pub fn new(
        b: &mut B,
        def: GraphDef,
        weights: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
    ) -> Result<GraphNet<B>> {
        let mut w = HashMap::new();
        for (name, shape, values) in weights {
            w.insert(name, b.upload(&values, &shape)?);
        }
        let program = Program::new(Arc::new(def), &|n| w.get(n).map(|t| b.shape(t).to_vec()))?;
        Ok(GraphNet { program, w })
    }

    pub fn def(&self) -> &GraphDef {
        &self.program.def
    }

    fn lookup(&self) -> impl Fn(&str) -> Result<B::T> + '_ {
        |n: &str| self.w.get(n).cloned().with_context(|| format!("the model has no weight `{n}`"))
    }

    /// Batch norms folded for inference (`passes::fold`).
    pub async fn fold(&mut self, b: &mut B) -> Result<()> {
        let w = self.w.clone();
        let lookup = |n: &str| w.get(n).cloned().with_context(|| format!("the model has no weight `{n}`"));
        self.program.fold(b, &lookup).await
    }

    /// The graph's output for a batch (N, 3, size, size), flattened to (N, D),
    /// in parts that fit one binding.
    pub fn forward(&self, b: &mut B, x: &B::T) -> Result<B::T> {
        let chunk = self.program.images_per_run(b.max_binding_bytes());
        Ok(self.program.forward(b, &self.lookup(), x, Mode::Eval, chunk)?.0)
    }
}
