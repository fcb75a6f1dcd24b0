//! Imported networks: a feed-forward graph of the engine's layers, read from
//! ONNX (`arcface import`) and saved as an ordinary checkpoint (the weights
//! as tensors, the graph as JSON metadata under `arcface_graph`). Runs in
//! eval mode on any `Backend`: the output, flattened per image, is the face
//! embedding.
//!
//! Supported ONNX operators: Conv (with or without bias, symmetric padding,
//! no dilation), BatchNormalization (eval), PRelu, Relu, Clip as ReLU6,
//! Add, Flatten / Reshape to one row per image, Gemm / MatMul with constant
//! weights, GlobalAveragePool (a depthwise convolution with 1/(h*w)
//! weights), Identity, and Constant nodes feeding the others. Anything else
//! is refused naming the node and the operator.

use crate::checkpoint::Normalization;
use crate::kernels::activation::Act;
use crate::kernels::batchnorm::{BatchNorm, BnParams};
use crate::kernels::conv2d::Conv2d;
use crate::kernels::linear::Linear;
use crate::nn::Backend;
use crate::onnx::{self, NodeProto, TensorProto};
use crate::tensorfile::{write_atomic, Loaded, TensorFile};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const KEY: &str = "arcface_graph";

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Relu6,
}

/// One layer; names are the graph's value and weight names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Conv { x: String, w: String, b: Option<String>, stride: usize, pad: usize, groups: usize, y: String },
    BatchNorm { x: String, scale: String, bias: String, mean: String, var: String, y: String },
    Prelu { x: String, slope: String, y: String },
    Act { x: String, act: Activation, y: String },
    Add { a: String, b: String, y: String },
    /// (N, ...) to (N, rest).
    Flatten { x: String, y: String },
    /// y = x W^T + b, W stored [out, in].
    Linear { x: String, w: String, b: Option<String>, y: String },
    GlobalAvgPool { x: String, y: String },
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

fn unsupported(node: &NodeProto, what: &str) -> anyhow::Error {
    anyhow::anyhow!("{}: {what}", node.describe())
}

/// ONNX to a graph of engine layers plus its weights.
pub fn from_onnx(path: &Path, input_size: usize) -> Result<(GraphDef, BTreeMap<String, Loaded>)> {
    let model = onnx::read(path)?;
    let g = model.graph.as_ref().expect("checked by onnx::read");
    let mut consts: HashMap<String, TensorProto> = g.initializer.iter().map(|t| (t.name.clone(), t.clone())).collect();
    let input = g
        .input
        .iter()
        .map(|i| i.name.clone())
        .find(|n| !consts.contains_key(n))
        .context("the graph has no input that is not a weight")?;
    let output = g.output.first().map(|o| o.name.clone()).context("the graph has no output")?;
    let mut weights = BTreeMap::new();
    fn use_weight(
        weights: &mut BTreeMap<String, Loaded>,
        consts: &HashMap<String, TensorProto>,
        name: &str,
        node: &NodeProto,
    ) -> Result<String> {
        let t = consts.get(name).ok_or_else(|| unsupported(node, &format!("input `{name}` must be a constant weight")))?;
        weights.insert(name.to_string(), Loaded { shape: t.shape(), values: t.floats()? });
        Ok(name.to_string())
    }
    let mut ops = Vec::new();
    // Renamed values (Identity) resolve to their source.
    let mut alias: HashMap<String, String> = HashMap::new();
    let val = |alias: &HashMap<String, String>, n: &str| alias.get(n).cloned().unwrap_or_else(|| n.to_string());
    for node in &g.node {
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            bail!("{}: operator domain `{}` is not supported", node.describe(), node.domain);
        }
        let x = node.input.first().map(|n| val(&alias, n)).unwrap_or_default();
        let y = node.output.first().cloned().unwrap_or_default();
        match node.op_type.as_str() {
            "Constant" => {
                let t = node.attr("value").and_then(|a| a.t.clone()).ok_or_else(|| unsupported(node, "only `value` tensors"))?;
                consts.insert(y, TensorProto { name: node.output[0].clone(), ..t });
            }
            "Identity" => {
                alias.insert(y, x);
            }
            "Conv" => {
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
                let w = use_weight(&mut weights, &consts, &node.input[1], node)?;
                let b = match node.input.get(2).filter(|s| !s.is_empty()) {
                    Some(n) => Some(use_weight(&mut weights, &consts, n, node)?),
                    None => None,
                };
                let groups = node.int("group", 1) as usize;
                ops.push(Op::Conv { x, w, b, stride: strides[0] as usize, pad: pads[0] as usize, groups, y });
            }
            "BatchNormalization" => {
                let eps = node.attr("epsilon").map_or(1e-5, |a| a.f);
                if (eps - crate::kernels::batchnorm::EPS).abs() > 1e-9 {
                    return Err(unsupported(node, &format!("epsilon {eps} (the kernel uses 1e-5)")));
                }
                let [scale, bias, mean, var] =
                    [1, 2, 3, 4].map(|i| node.input.get(i).cloned().unwrap_or_default());
                ops.push(Op::BatchNorm {
                    x,
                    scale: use_weight(&mut weights, &consts, &scale, node)?,
                    bias: use_weight(&mut weights, &consts, &bias, node)?,
                    mean: use_weight(&mut weights, &consts, &mean, node)?,
                    var: use_weight(&mut weights, &consts, &var, node)?,
                    y,
                });
            }
            "PRelu" => ops.push(Op::Prelu { x, slope: use_weight(&mut weights, &consts, &node.input[1], node)?, y }),
            "Relu" => ops.push(Op::Act { x, act: Activation::Relu, y }),
            "Clip" => {
                let bound = |i: usize| -> Result<Option<f32>> {
                    match node.input.get(i).filter(|s| !s.is_empty()) {
                        Some(n) => {
                            let t = consts.get(n).ok_or_else(|| unsupported(node, "bounds must be constants"))?;
                            Ok(t.floats()?.first().copied())
                        }
                        None => Ok(None),
                    }
                };
                let act = match (bound(1)?, bound(2)?) {
                    (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => Activation::Relu6,
                    (Some(lo), None) if lo == 0.0 => Activation::Relu,
                    (lo, hi) => return Err(unsupported(node, &format!("Clip to [{lo:?}, {hi:?}]: only ReLU and ReLU6"))),
                };
                ops.push(Op::Act { x, act, y });
            }
            "Add" => ops.push(Op::Add { a: x, b: val(&alias, &node.input[1]), y }),
            "Flatten" => {
                if node.int("axis", 1) != 1 {
                    return Err(unsupported(node, "axis other than 1"));
                }
                ops.push(Op::Flatten { x, y });
            }
            "Reshape" => {
                // Only a flatten to one row per image: target shape (k, -1) with k = 0, 1 or -1.
                let shape = consts
                    .get(&node.input[1])
                    .ok_or_else(|| unsupported(node, "the target shape must be a constant"))?
                    .ints()?;
                if shape.len() != 2 || shape[1] != -1 || ![-1, 0, 1].contains(&shape[0]) {
                    return Err(unsupported(node, &format!("reshape to {shape:?}: only a flatten to (N, -1)")));
                }
                ops.push(Op::Flatten { x, y });
            }
            "Gemm" | "MatMul" => {
                let trans_b = node.op_type == "Gemm" && node.int("transB", 0) == 1;
                if node.op_type == "Gemm"
                    && (node.int("transA", 0) != 0
                        || node.attr("alpha").is_some_and(|a| a.f != 1.0)
                        || node.attr("beta").is_some_and(|a| a.f != 1.0))
                {
                    return Err(unsupported(node, "transA, alpha or beta other than the defaults"));
                }
                let name = &node.input[1];
                let t = consts.get(name).ok_or_else(|| unsupported(node, "the weight must be a constant"))?;
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
                weights.insert(name.clone(), Loaded { shape, values });
                let b = match node.input.get(2).filter(|s| !s.is_empty()) {
                    Some(n) => Some(use_weight(&mut weights, &consts, n, node)?),
                    None => None,
                };
                ops.push(Op::Linear { x, w: name.clone(), b, y });
            }
            "GlobalAveragePool" => ops.push(Op::GlobalAvgPool { x, y }),
            other => return Err(unsupported(node, &format!("operator {other} is not supported"))),
        }
    }
    let output = val(&alias, &output);
    let def = GraphDef {
        format: 1,
        source: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        input,
        output,
        input_size,
        normalization: Normalization::default(),
        ops,
    };
    Ok((def, weights))
}

pub fn save(path: &Path, def: &GraphDef, weights: &BTreeMap<String, Loaded>) -> Result<()> {
    let meta = HashMap::from([(KEY.to_string(), serde_json::to_string(def)?)]);
    write_atomic(path, weights, meta).with_context(|| format!("saving {}", path.display()))
}

/// Whether a checkpoint file holds an imported graph.
pub fn is_graph(file: &TensorFile) -> bool {
    file.metadata.contains_key(KEY)
}

/// A graph on a backend, weights uploaded.
pub struct GraphNet<B: Backend> {
    pub def: GraphDef,
    w: HashMap<String, B::T>,
}

impl<B: Backend> GraphNet<B> {
    pub fn load(b: &mut B, path: &Path, file: &TensorFile) -> Result<GraphNet<B>> {
        let def: GraphDef = serde_json::from_str(&file.metadata[KEY])
            .with_context(|| format!("{}: unreadable graph description", path.display()))?;
        let mut w = HashMap::new();
        for (name, t) in &file.tensors {
            w.insert(name.clone(), b.upload(&t.values, &t.shape)?);
        }
        Ok(GraphNet { def, w })
    }

    fn weight(&self, name: &str) -> Result<&B::T> {
        self.w.get(name).with_context(|| format!("the checkpoint has no weight `{name}`"))
    }

    /// The graph's output for a batch (N, 3, size, size), flattened to (N, D).
    pub fn forward(&self, b: &mut B, x: &B::T) -> Result<B::T> {
        let mut v: HashMap<&str, B::T> = HashMap::from([(self.def.input.as_str(), x.clone())]);
        let get = |v: &HashMap<&str, B::T>, n: &str| -> Result<B::T> {
            v.get(n).cloned().with_context(|| format!("value `{n}` is used before it is computed"))
        };
        for op in &self.def.ops {
            let (y, out) = match op {
                Op::Conv { x, w, b: bias, stride, pad, groups, y } => {
                    let (xt, wt) = (get(&v, x)?, self.weight(w)?);
                    let (xs, ws) = (b.shape(&xt).to_vec(), b.shape(wt).to_vec());
                    let s = Conv2d {
                        n: xs[0],
                        cin: xs[1],
                        h: xs[2],
                        w: xs[3],
                        cout: ws[0],
                        kh: ws[2],
                        kw: ws[3],
                        stride: *stride,
                        pad: *pad,
                        groups: *groups,
                        bias: bias.is_some(),
                    };
                    s.validate()?;
                    let bt = match bias {
                        Some(n) => Some(self.weight(n)?),
                        None => None,
                    };
                    (y, b.conv2d(&s, &xt, wt, bt)?)
                }
                Op::BatchNorm { x, scale, bias, mean, var, y } => {
                    let xt = get(&v, x)?;
                    let s = b.shape(&xt).to_vec();
                    let bn = BatchNorm { n: s[0], c: s[1], m: s[2..].iter().product() };
                    let p = BnParams {
                        gamma: self.weight(scale)?.clone(),
                        beta: self.weight(bias)?.clone(),
                        running_mean: self.weight(mean)?.clone(),
                        running_var: self.weight(var)?.clone(),
                    };
                    (y, b.batchnorm(&bn, &p, &xt, false)?.0)
                }
                Op::Prelu { x, slope, y } => (y, b.prelu(&get(&v, x)?, self.weight(slope)?)?),
                Op::Act { x, act, y } => {
                    let a = match act {
                        Activation::Relu => Act::Relu,
                        Activation::Relu6 => Act::Relu6,
                    };
                    (y, b.act(a, &get(&v, x)?)?)
                }
                Op::Add { a, b: c, y } => (y, b.add(&get(&v, a)?, &get(&v, c)?)?),
                Op::Flatten { x, y } => {
                    let xt = get(&v, x)?;
                    let s = b.shape(&xt).to_vec();
                    (y, b.reshape(&xt, &[s[0], s[1..].iter().product()])?)
                }
                Op::Linear { x, w, b: bias, y } => {
                    let xt = get(&v, x)?;
                    let wt = self.weight(w)?;
                    let (n, ws) = (b.shape(&xt)[0], b.shape(wt).to_vec());
                    let xt = b.reshape(&xt, &[n, ws[1]])?;
                    let bt = match bias {
                        Some(n) => Some(self.weight(n)?),
                        None => None,
                    };
                    (y, b.linear(&Linear { n, inp: ws[1], out: ws[0], bias: bias.is_some() }, &xt, wt, bt)?)
                }
                Op::GlobalAvgPool { x, y } => {
                    let xt = get(&v, x)?;
                    let s = b.shape(&xt).to_vec();
                    let (c, h, w) = (s[1], s[2], s[3]);
                    let ones = b.upload(&vec![1.0 / (h * w) as f32; c * h * w], &[c, 1, h, w])?;
                    let conv = Conv2d { n: s[0], cin: c, h, w, cout: c, kh: h, kw: w, stride: 1, pad: 0, groups: c, bias: false };
                    (y, b.conv2d(&conv, &xt, &ones, None)?)
                }
            };
            v.insert(y.as_str(), out);
        }
        let out = get(&v, &self.def.output)?;
        let s = b.shape(&out).to_vec();
        b.reshape(&out, &[s[0], s[1..].iter().product()])
    }
}
