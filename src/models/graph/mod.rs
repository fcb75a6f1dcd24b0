//! Imported networks: a feed-forward graph of the engine's layers (read from
//! ONNX by `io::onnx_import`, saved in checkpoints by `io::model_file`). Runs
//! in eval mode on any `Backend`: the output, flattened per image, is the
//! face embedding; `run` and `backward` also serve fine-tuning.

mod run;

pub use run::{backward, run, Saved};

use crate::data::input::Normalization;
use crate::kernels::activation::Act;
use crate::nn::Backend;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One layer; names are the graph's value and weight names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Conv {
        x: String,
        w: String,
        b: Option<String>,
        stride: usize,
        pad: usize,
        groups: usize,
        y: String,
    },
    BatchNorm {
        x: String,
        scale: String,
        bias: String,
        mean: String,
        var: String,
        y: String,
    },
    Prelu {
        x: String,
        slope: String,
        y: String,
    },
    Act {
        x: String,
        act: Act,
        y: String,
    },
    Add {
        a: String,
        b: String,
        y: String,
    },
    /// (N, ...) to (N, rest).
    Flatten {
        x: String,
        y: String,
    },
    /// y = x W^T + b, W stored [out, in].
    Linear {
        x: String,
        w: String,
        b: Option<String>,
        y: String,
    },
    GlobalAvgPool {
        x: String,
        y: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphDef {
    pub format: u32,
    /// Where it was imported from.
    pub source: String,
    pub input: String,
    pub output: String,
    /// Input height = width.
    pub input_size: usize,
    pub normalization: Normalization,
    pub ops: Vec<Op>,
}

/// A graph on a backend, weights uploaded.
pub struct GraphNet<B: Backend> {
    pub def: GraphDef,
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
        Ok(GraphNet { def, w })
    }

    /// The graph's output for a batch (N, 3, size, size), flattened to (N, D).
    pub fn forward(&self, b: &mut B, x: &B::T) -> Result<B::T> {
        let w = |n: &str| self.w.get(n).cloned().with_context(|| format!("the checkpoint has no weight `{n}`"));
        Ok(run(&self.def, b, &w, x, false)?.0)
    }
}
