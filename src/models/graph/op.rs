//! The operators a graph is made of. Values and weights are named; an op
//! reads values and weights and writes one value.

use crate::kernels::activation::Act;
use serde::{Deserialize, Serialize};

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
    /// Batch statistics in training mode (the running ones updated), the
    /// running statistics in eval mode.
    BatchNorm {
        x: String,
        scale: String,
        bias: String,
        mean: String,
        var: String,
        y: String,
    },
    /// Batch norm, then PReLU with `slope`, then `+ skip`: one kernel each
    /// way in training (`Backend::bn_act`). Written by `passes::fuse`, never
    /// by a builder or the importer.
    BnAct {
        x: String,
        scale: String,
        bias: String,
        mean: String,
        var: String,
        slope: Option<String>,
        skip: Option<String>,
        y: String,
    },
    /// A convolution (`conv`) or linear layer (`conv: None`) finishing each
    /// output as it writes it: `+ b`, then `act`, then `+ skip` (one kernel
    /// where three ran; `Backend::conv2d_with`). Written by
    /// `passes::epilogues` for inference, never by a builder or the
    /// importer; no backward.
    Fused {
        x: String,
        w: String,
        b: Option<String>,
        conv: Option<Window>,
        act: Option<FusedAct>,
        skip: Option<String>,
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
    /// y = x W^T + b, W stored [out, in]; x is flattened per image first.
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
    /// Square windows; `ceil` rounds the output size up (MTCNN's pooling).
    MaxPool {
        x: String,
        k: usize,
        stride: usize,
        pad: usize,
        ceil: bool,
        y: String,
    },
}

/// A convolution's stride, padding and groups (its kernel size is its weight's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
}

/// The activation of a `Fused` op: PReLU with a slope weight, or a fixed one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusedAct {
    Prelu(String),
    Fixed(Act),
}

impl Op {
    /// The value it writes.
    pub fn output(&self) -> &str {
        match self {
            Op::Conv { y, .. }
            | Op::Fused { y, .. }
            | Op::BatchNorm { y, .. }
            | Op::BnAct { y, .. }
            | Op::Prelu { y, .. }
            | Op::Act { y, .. }
            | Op::Add { y, .. }
            | Op::Flatten { y, .. }
            | Op::Linear { y, .. }
            | Op::GlobalAvgPool { y, .. }
            | Op::MaxPool { y, .. } => y,
        }
    }

    /// The values it reads, in order.
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            Op::BnAct { x, skip, .. } | Op::Fused { x, skip, .. } => {
                std::iter::once(x.as_str()).chain(skip.as_deref()).collect()
            }
            Op::Add { a, b, .. } => vec![a, b],
            Op::Conv { x, .. }
            | Op::BatchNorm { x, .. }
            | Op::Prelu { x, .. }
            | Op::Act { x, .. }
            | Op::Flatten { x, .. }
            | Op::Linear { x, .. }
            | Op::GlobalAvgPool { x, .. }
            | Op::MaxPool { x, .. } => vec![x],
        }
    }

    /// The weights it reads.
    pub fn weights(&self) -> Vec<&str> {
        match self {
            Op::Conv { w, b, .. } | Op::Linear { w, b, .. } => {
                std::iter::once(w.as_str()).chain(b.as_deref()).collect()
            }
            Op::Fused { w, b, act, .. } => {
                let slope = match act {
                    Some(FusedAct::Prelu(s)) => Some(s.as_str()),
                    _ => None,
                };
                std::iter::once(w.as_str()).chain(b.as_deref()).chain(slope).collect()
            }
            Op::BatchNorm { scale, bias, mean, var, .. } => vec![scale, bias, mean, var],
            Op::BnAct { scale, bias, mean, var, slope, .. } => {
                [scale, bias, mean, var].into_iter().map(String::as_str).chain(slope.as_deref()).collect()
            }
            Op::Prelu { slope, .. } => vec![slope],
            Op::Act { .. } | Op::Add { .. } | Op::Flatten { .. } | Op::GlobalAvgPool { .. } | Op::MaxPool { .. } => {
                Vec::new()
            }
        }
    }

    /// The weights that are statistics, not learned (batch norms' running
    /// mean and variance): training updates them, SGD does not.
    pub fn statistics(&self) -> Vec<&str> {
        match self {
            Op::BatchNorm { mean, var, .. } | Op::BnAct { mean, var, .. } => vec![mean, var],
            _ => Vec::new(),
        }
    }

    /// The ONNX operator it is written as (the fused form: the three it
    /// stands for, joined by `+`).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "Conv",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::BnAct { .. } => "BatchNormalization+PRelu+Add",
            Op::Fused { conv: Some(_), .. } => "Conv+activation+Add",
            Op::Fused { conv: None, .. } => "Gemm+activation+Add",
            Op::Prelu { .. } => "PRelu",
            Op::Act { act: Act::Relu, .. } => "Relu",
            Op::Act { .. } => "Clip",
            Op::Add { .. } => "Add",
            Op::Flatten { .. } => "Flatten",
            Op::Linear { .. } => "Gemm",
            Op::GlobalAvgPool { .. } => "GlobalAveragePool",
            Op::MaxPool { .. } => "MaxPool",
        }
    }
}
