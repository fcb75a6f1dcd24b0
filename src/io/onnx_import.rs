//! ONNX to a graph of engine layers (`arcface import`).
//!
//! Supported ONNX operators: Conv (with or without bias, symmetric padding,
//! no dilation), BatchNormalization, PRelu, Relu, Clip as ReLU6, Add,
//! Flatten / Reshape to one row per image, Gemm / MatMul with constant
//! weights, GlobalAveragePool, MaxPool (square, symmetric padding, ceil mode
//! or not), Identity, and Constant and Unsqueeze-of-a-constant nodes feeding
//! the others. Anything else is refused naming the node and the operator.

use super::onnx::{self, NodeProto, TensorProto};
use super::tensorfile::Loaded;
use crate::data::input::Normalization;
use crate::kernels::activation::Act;
use crate::kernels::batchnorm;
use crate::models::graph::{GraphDef, Op};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

fn unsupported(node: &NodeProto, what: &str) -> anyhow::Error {
    anyhow::anyhow!("{}: {what}", node.describe())
}

/// ONNX to a graph of engine layers plus its weights.
pub fn from_onnx(path: &Path, input_size: usize) -> Result<(GraphDef, BTreeMap<String, Loaded>)> {
    let model = onnx::read(path)?;
    let g = model.graph.as_ref().expect("checked by onnx::read");
    let consts: HashMap<String, TensorProto> = g.initializer.iter().map(|t| (t.name.clone(), t.clone())).collect();
    let input = g
        .input
        .iter()
        .map(|i| i.name.clone())
        .find(|n| !consts.contains_key(n))
        .context("the graph has no input that is not a weight")?;
    let output = g.output.first().map(|o| o.name.clone()).context("the graph has no output")?;
    let mut im = Importer { consts, weights: BTreeMap::new(), alias: HashMap::new(), ops: Vec::new() };
    for node in &g.node {
        im.node(node)?;
    }
    let def = GraphDef {
        format: 1,
        source: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        input,
        output: im.val(&output),
        input_size,
        normalization: Normalization::default(),
        ops: im.ops,
        parts: Vec::new(),
    };
    Ok((def, im.weights))
}

/// The graph as it is read, node by node.
struct Importer {
    /// Initializers and Constant outputs, by value name.
    consts: HashMap<String, TensorProto>,
    /// The constants that layers use as weights.
    weights: BTreeMap<String, Loaded>,
    /// Renamed values (Identity) resolve to their source.
    alias: HashMap<String, String>,
    ops: Vec<Op>,
}

impl Importer {
    fn val(&self, n: &str) -> String {
        self.alias.get(n).cloned().unwrap_or_else(|| n.to_string())
    }

    /// Input `name` of `node` as a weight (it must be a constant). A
    /// constant reshaped from another keeps the source's name (PyTorch
    /// writes a PReLU's slope `p.weight` through an Unsqueeze).
    fn weight(&mut self, name: &str, node: &NodeProto) -> Result<String> {
        let t = self
            .consts
            .get(name)
            .ok_or_else(|| unsupported(node, &format!("input `{name}` must be a constant weight")))?;
        let (shape, values) = (t.shape(), t.floats()?);
        let taken = |n: &str| self.weights.get(n).is_some_and(|w| w.shape != shape || w.values != values);
        let key = if !t.name.is_empty() && !taken(&t.name) { t.name.clone() } else { name.to_string() };
        self.weights.insert(key.clone(), Loaded { shape, values });
        Ok(key)
    }

    /// Unsqueeze of a constant (a PReLU slope made (C, 1, 1)): the constant
    /// reshaped; of anything else, refused.
    fn unsqueeze(&mut self, node: &NodeProto, y: String) -> Result<()> {
        let x = node.input.first().cloned().unwrap_or_default();
        let t = self.consts.get(&x).ok_or_else(|| unsupported(node, "only of a constant"))?.clone();
        let axes = match node.input.get(1).filter(|s| !s.is_empty()) {
            Some(a) => self.consts.get(a).ok_or_else(|| unsupported(node, "axes must be a constant"))?.ints()?,
            None => node.ints("axes").ok_or_else(|| unsupported(node, "no axes"))?,
        };
        let mut dims = t.dims.clone();
        let rank = (dims.len() + axes.len()) as i64;
        let mut axes: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + rank } else { a }).collect();
        axes.sort_unstable();
        for a in axes {
            if a < 0 || a as usize > dims.len() {
                return Err(unsupported(node, &format!("axis {a} for a constant of rank {}", t.dims.len())));
            }
            dims.insert(a as usize, 1);
        }
        self.consts.insert(y, TensorProto { dims, ..t });
        Ok(())
    }

    /// The optional weight at input `i` (a bias).
    fn optional_weight(&mut self, node: &NodeProto, i: usize) -> Result<Option<String>> {
        match node.input.get(i).filter(|s| !s.is_empty()) {
            Some(n) => Ok(Some(self.weight(&n.clone(), node)?)),
            None => Ok(None),
        }
    }

    fn node(&mut self, node: &NodeProto) -> Result<()> {
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            bail!("{}: operator domain `{}` is not supported", node.describe(), node.domain);
        }
        let x = node.input.first().map(|n| self.val(n)).unwrap_or_default();
        let y = node.output.first().cloned().unwrap_or_default();
        let op = match node.op_type.as_str() {
            "Constant" => {
                let t = node
                    .attr("value")
                    .and_then(|a| a.t.clone())
                    .ok_or_else(|| unsupported(node, "only `value` tensors"))?;
                self.consts.insert(y, TensorProto { name: node.output[0].clone(), ..t });
                return Ok(());
            }
            "Identity" => {
                match self.consts.get(&x).cloned() {
                    // A constant under another name (exporters share equal
                    // initializers this way): a weight of its own, so that
                    // fine-tuning does not tie what only happened to be equal.
                    Some(t) => {
                        self.consts.insert(y.clone(), TensorProto { name: y, ..t });
                    }
                    None => {
                        self.alias.insert(y, x);
                    }
                }
                return Ok(());
            }
            "Unsqueeze" => return self.unsqueeze(node, y),
            "Conv" => self.conv(node, x, y)?,
            "BatchNormalization" => self.batchnorm(node, x, y)?,
            "PRelu" => Op::Prelu { x, slope: self.weight(&node.input[1], node)?, y },
            "Relu" => Op::Act { x, act: Act::Relu, y },
            "Clip" => Op::Act { x, act: self.clip(node)?, y },
            "Add" => Op::Add { a: x, b: self.val(&node.input[1]), y },
            "Flatten" => {
                if node.int("axis", 1) != 1 {
                    return Err(unsupported(node, "axis other than 1"));
                }
                Op::Flatten { x, y }
            }
            "Reshape" => self.reshape(node, x, y)?,
            "Gemm" | "MatMul" => self.linear(node, x, y)?,
            "GlobalAveragePool" => Op::GlobalAvgPool { x, y },
            "MaxPool" => self.maxpool(node, x, y)?,
            other => return Err(unsupported(node, &format!("operator {other} is not supported"))),
        };
        self.ops.push(op);
        Ok(())
    }

    fn conv(&mut self, node: &NodeProto, x: String, y: String) -> Result<Op> {
        if node.ints("dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err(unsupported(node, "dilation other than 1"));
        }
        let strides = node.ints("strides").unwrap_or(vec![1, 1]);
        let pads = node.ints("pads").unwrap_or(vec![0, 0, 0, 0]);
        if strides.iter().any(|&s| s != strides[0]) || pads.iter().any(|&p| p != pads[0]) {
            return Err(unsupported(node, &format!("strides {strides:?} / pads {pads:?}: only equal values")));
        }
        if node.attr("auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
            return Err(unsupported(node, "auto_pad"));
        }
        let w = self.weight(&node.input[1], node)?;
        let b = self.optional_weight(node, 2)?;
        let groups = node.int("group", 1) as usize;
        Ok(Op::Conv { x, w, b, stride: strides[0] as usize, pad: pads[0] as usize, groups, y })
    }

    fn batchnorm(&mut self, node: &NodeProto, x: String, y: String) -> Result<Op> {
        let eps = node.attr("epsilon").map_or(1e-5, |a| a.f);
        if (eps - batchnorm::EPS).abs() > 1e-9 {
            return Err(unsupported(node, &format!("epsilon {eps} (the kernel uses 1e-5)")));
        }
        let [scale, bias, mean, var] = [1, 2, 3, 4].map(|i| node.input.get(i).cloned().unwrap_or_default());
        Ok(Op::BatchNorm {
            x,
            scale: self.weight(&scale, node)?,
            bias: self.weight(&bias, node)?,
            mean: self.weight(&mean, node)?,
            var: self.weight(&var, node)?,
            y,
        })
    }

    fn maxpool(&self, node: &NodeProto, x: String, y: String) -> Result<Op> {
        let k = node.ints("kernel_shape").unwrap_or_default();
        let strides = node.ints("strides").unwrap_or(vec![1, 1]);
        let pads = node.ints("pads").unwrap_or(vec![0, 0, 0, 0]);
        let square = |v: &[i64]| v.iter().all(|&a| a == v[0]);
        if k.len() != 2 || !square(&k) || !square(&strides) || !square(&pads) {
            return Err(unsupported(node, &format!("kernel {k:?}, strides {strides:?}, pads {pads:?}: only square")));
        }
        if node.ints("dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) || node.int("storage_order", 0) != 0 {
            return Err(unsupported(node, "dilation or storage order"));
        }
        let ceil = node.int("ceil_mode", 0) == 1;
        Ok(Op::MaxPool { x, k: k[0] as usize, stride: strides[0] as usize, pad: pads[0] as usize, ceil, y })
    }

    /// Clip to [0, 6] is ReLU6, to [0, inf) ReLU; other bounds are refused.
    fn clip(&self, node: &NodeProto) -> Result<Act> {
        let bound = |i: usize| -> Result<Option<f32>> {
            match node.input.get(i).filter(|s| !s.is_empty()) {
                Some(n) => {
                    let t = self.consts.get(n).ok_or_else(|| unsupported(node, "bounds must be constants"))?;
                    Ok(t.floats()?.first().copied())
                }
                None => Ok(None),
            }
        };
        match (bound(1)?, bound(2)?) {
            (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => Ok(Act::Relu6),
            (Some(0.0), None) => Ok(Act::Relu),
            (lo, hi) => Err(unsupported(node, &format!("Clip to [{lo:?}, {hi:?}]: only ReLU and ReLU6"))),
        }
    }

    /// Only a flatten to one row per image: target shape (k, -1) with k = 0,
    /// 1 or -1. k = 1 is what exporters write for a batch-1 trace (this
    /// model's file has it); it is taken as the per-image flatten the
    /// exporter meant, for any batch.
    fn reshape(&self, node: &NodeProto, x: String, y: String) -> Result<Op> {
        let shape = self
            .consts
            .get(&node.input[1])
            .ok_or_else(|| unsupported(node, "the target shape must be a constant"))?
            .ints()?;
        if shape.len() != 2 || shape[1] != -1 || ![-1, 0, 1].contains(&shape[0]) {
            return Err(unsupported(node, &format!("reshape to {shape:?}: only a flatten to (N, -1)")));
        }
        Ok(Op::Flatten { x, y })
    }

    /// Gemm / MatMul with a constant 2-D weight, stored [out, in].
    fn linear(&mut self, node: &NodeProto, x: String, y: String) -> Result<Op> {
        let trans_b = node.op_type == "Gemm" && node.int("transB", 0) == 1;
        if node.op_type == "Gemm"
            && (node.int("transA", 0) != 0
                || node.attr("alpha").is_some_and(|a| a.f != 1.0)
                || node.attr("beta").is_some_and(|a| a.f != 1.0))
        {
            return Err(unsupported(node, "transA, alpha or beta other than the defaults"));
        }
        let name = &node.input[1];
        let t = self.consts.get(name).ok_or_else(|| unsupported(node, "the weight must be a constant"))?;
        let (s, v) = (t.shape(), t.floats()?);
        if s.len() != 2 {
            return Err(unsupported(node, "a weight that is not 2-D"));
        }
        // Stored [out, in]: transpose an (in, out) weight.
        let (shape, values) = if trans_b {
            (s.clone(), v)
        } else {
            let (k, n) = (s[0], s[1]);
            (vec![n, k], (0..n * k).map(|i| v[(i % k) * n + i / k]).collect())
        };
        self.weights.insert(name.clone(), Loaded { shape, values });
        let b = self.optional_weight(node, 2)?;
        Ok(Op::Linear { x, w: name.clone(), b, y })
    }
}
