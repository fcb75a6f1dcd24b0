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
        act: Activation,
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
        let t =
            consts.get(name).ok_or_else(|| unsupported(node, &format!("input `{name}` must be a constant weight")))?;
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
                let t = node
                    .attr("value")
                    .and_then(|a| a.t.clone())
                    .ok_or_else(|| unsupported(node, "only `value` tensors"))?;
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
                let [scale, bias, mean, var] = [1, 2, 3, 4].map(|i| node.input.get(i).cloned().unwrap_or_default());
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
                    (lo, hi) => {
                        return Err(unsupported(node, &format!("Clip to [{lo:?}, {hi:?}]: only ReLU and ReLU6")))
                    }
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
                // k = 1 is what exporters write for a batch-1 trace (this model's file has it);
                // it is taken as the per-image flatten the exporter meant, for any batch.
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

/// What a training forward pass keeps for the backward pass: every value.
pub struct Saved<T> {
    values: HashMap<String, T>,
}

impl<T> Saved<T> {
    /// Nothing saved (an eval-mode pass).
    pub fn empty() -> Saved<T> {
        Saved { values: HashMap::new() }
    }
}

/// Runs the graph on a batch (N, 3, size, size); `w` looks weights up by
/// their graph name. The output is flattened to (N, D). With `save`, every
/// value is kept for `backward`.
pub fn run<B: Backend>(
    def: &GraphDef,
    b: &mut B,
    w: &dyn Fn(&str) -> Result<B::T>,
    x: &B::T,
    save: bool,
) -> Result<(B::T, Option<Saved<B::T>>)> {
    let mut v: HashMap<String, B::T> = HashMap::from([(def.input.clone(), x.clone())]);
    let get = |v: &HashMap<String, B::T>, n: &str| -> Result<B::T> {
        v.get(n).cloned().with_context(|| format!("value `{n}` is used before it is computed"))
    };
    for op in &def.ops {
        let (y, out) = match op {
            Op::Conv { x, w: wn, b: bias, .. } => {
                let (xt, wt) = (get(&v, x)?, w(wn)?);
                let s = conv_shape(b, op, &xt, &wt)?;
                let bt = bias.as_deref().map(w).transpose()?;
                (op_output(op), b.conv2d(&s, &xt, &wt, bt.as_ref())?)
            }
            Op::BatchNorm { x, scale, bias, mean, var, .. } => {
                let xt = get(&v, x)?;
                let s = b.shape(&xt).to_vec();
                let bn = BatchNorm { n: s[0], c: s[1], m: s[2..].iter().product() };
                let p = BnParams { gamma: w(scale)?, beta: w(bias)?, running_mean: w(mean)?, running_var: w(var)? };
                (op_output(op), b.batchnorm(&bn, &p, &xt, false)?.0)
            }
            Op::Prelu { x, slope, .. } => (op_output(op), b.prelu(&get(&v, x)?, &w(slope)?)?),
            Op::Act { x, act, .. } => (op_output(op), b.act(kernel_act(*act), &get(&v, x)?)?),
            Op::Add { a, b: c, .. } => (op_output(op), b.add(&get(&v, a)?, &get(&v, c)?)?),
            Op::Flatten { x, .. } => {
                let xt = get(&v, x)?;
                let s = b.shape(&xt).to_vec();
                (op_output(op), b.reshape(&xt, &[s[0], s[1..].iter().product()])?)
            }
            Op::Linear { x, w: wn, b: bias, .. } => {
                let (xt, wt) = (get(&v, x)?, w(wn)?);
                let (n, ws) = (b.shape(&xt)[0], b.shape(&wt).to_vec());
                let xt = b.reshape(&xt, &[n, ws[1]])?;
                let bt = bias.as_deref().map(w).transpose()?;
                let s = Linear { n, inp: ws[1], out: ws[0], bias: bias.is_some() };
                (op_output(op), b.linear(&s, &xt, &wt, bt.as_ref())?)
            }
            Op::GlobalAvgPool { x, .. } => {
                let xt = get(&v, x)?;
                let (s, ones) = pool_as_conv(b, &xt)?;
                (op_output(op), b.conv2d(&s, &xt, &ones, None)?)
            }
        };
        v.insert(y, out);
    }
    let out = get(&v, &def.output)?;
    let s = b.shape(&out).to_vec();
    let flat = b.reshape(&out, &[s[0], s[1..].iter().product()])?;
    Ok((flat, save.then_some(Saved { values: v })))
}

/// Gradients of the graph's weights (by graph name, passed to `grad`) given
/// d output; the input's gradient is not needed and not computed past the
/// first layer.
pub fn backward<B: Backend>(
    def: &GraphDef,
    b: &mut B,
    w: &dyn Fn(&str) -> Result<B::T>,
    saved: &Saved<B::T>,
    dout: &B::T,
    grad: &mut dyn FnMut(&mut B, &str, B::T) -> Result<()>,
) -> Result<()> {
    let val = |n: &str| saved.values.get(n).cloned().with_context(|| format!("value `{n}` was not saved"));
    let out_shape = b.shape(&val(&def.output)?).to_vec();
    let mut d: HashMap<String, B::T> = HashMap::from([(def.output.clone(), b.reshape(dout, &out_shape)?)]);
    fn flow<B: Backend>(b: &mut B, d: &mut HashMap<String, B::T>, name: &str, g: B::T) -> Result<()> {
        match d.remove(name) {
            Some(prev) => {
                let sum = b.add(&prev, &g)?;
                d.insert(name.to_string(), sum);
            }
            None => {
                d.insert(name.to_string(), g);
            }
        }
        Ok(())
    }
    for op in def.ops.iter().rev() {
        let Some(dy) = d.remove(&op_output(op)) else { continue };
        match op {
            Op::Conv { x, w: wn, b: bias, .. } => {
                let (xt, wt) = (val(x)?, w(wn)?);
                let s = conv_shape(b, op, &xt, &wt)?;
                let g = b.conv2d_backward(&s, &xt, &wt, &dy)?;
                grad(b, wn, g.dw)?;
                if let (Some(bn), Some(db)) = (bias, g.db) {
                    grad(b, bn, db)?;
                }
                if *x != def.input {
                    flow(b, &mut d, x, g.dx)?;
                }
            }
            Op::Act { x, act, .. } => {
                let dx = b.act_backward(kernel_act(*act), &val(x)?, &dy)?;
                flow(b, &mut d, x, dx)?;
            }
            Op::Prelu { x, slope, .. } => {
                let (dx, ds) = b.prelu_backward(&val(x)?, &w(slope)?, &dy)?;
                grad(b, slope, ds)?;
                flow(b, &mut d, x, dx)?;
            }
            Op::Add { a, b: c, .. } => {
                flow(b, &mut d, a, dy.clone())?;
                flow(b, &mut d, c, dy)?;
            }
            Op::Flatten { x, .. } => {
                let s = b.shape(&val(x)?).to_vec();
                let dx = b.reshape(&dy, &s)?;
                flow(b, &mut d, x, dx)?;
            }
            Op::Linear { x, w: wn, b: bias, .. } => {
                let (xt, wt) = (val(x)?, w(wn)?);
                let xs = b.shape(&xt).to_vec();
                let ws = b.shape(&wt).to_vec();
                let x2 = b.reshape(&xt, &[xs[0], ws[1]])?;
                let s = Linear { n: xs[0], inp: ws[1], out: ws[0], bias: bias.is_some() };
                let g = b.linear_backward(&s, &x2, &wt, &dy)?;
                grad(b, wn, g.dw)?;
                if let (Some(bn), Some(db)) = (bias, g.db) {
                    grad(b, bn, db)?;
                }
                let dx = b.reshape(&g.dx, &xs)?;
                flow(b, &mut d, x, dx)?;
            }
            Op::GlobalAvgPool { x, .. } => {
                let xt = val(x)?;
                let (s, ones) = pool_as_conv(b, &xt)?;
                let g = b.conv2d_backward(&s, &xt, &ones, &dy)?;
                flow(b, &mut d, x, g.dx)?;
            }
            Op::BatchNorm { .. } => {
                bail!("fine-tuning through an imported BatchNormalization is not supported (fold it into the conv)")
            }
        }
    }
    Ok(())
}

fn op_output(op: &Op) -> String {
    match op {
        Op::Conv { y, .. }
        | Op::BatchNorm { y, .. }
        | Op::Prelu { y, .. }
        | Op::Act { y, .. }
        | Op::Add { y, .. }
        | Op::Flatten { y, .. }
        | Op::Linear { y, .. }
        | Op::GlobalAvgPool { y, .. } => y.clone(),
    }
}

fn kernel_act(a: Activation) -> Act {
    match a {
        Activation::Relu => Act::Relu,
        Activation::Relu6 => Act::Relu6,
    }
}

fn conv_shape<B: Backend>(b: &B, op: &Op, x: &B::T, w: &B::T) -> Result<Conv2d> {
    let Op::Conv { b: bias, stride, pad, groups, .. } = op else { bail!("not a convolution") };
    let s = Conv2d::from_shapes(b.shape(x), b.shape(w), *stride, *pad, *groups, bias.is_some());
    s.validate()?;
    Ok(s)
}

/// Global average pooling as a depthwise convolution with 1/(h*w) weights.
fn pool_as_conv<B: Backend>(b: &mut B, x: &B::T) -> Result<(Conv2d, B::T)> {
    let s = b.shape(x).to_vec();
    let (c, h, w) = (s[1], s[2], s[3]);
    let ones = b.upload(&vec![1.0 / (h * w) as f32; c * h * w], &[c, 1, h, w])?;
    Ok((Conv2d::from_shapes(&s, &[c, 1, h, w], 1, 0, c, false), ones))
}

/// A graph on a backend, weights uploaded.
pub struct GraphNet<B: Backend> {
    pub def: GraphDef,
    w: HashMap<String, B::T>,
}

impl<B: Backend> GraphNet<B> {
    pub fn load(b: &mut B, path: &Path, file: &TensorFile) -> Result<GraphNet<B>> {
        let def = read_def(path, file)?;
        let mut w = HashMap::new();
        for (name, t) in &file.tensors {
            w.insert(name.clone(), b.upload(&t.values, &t.shape)?);
        }
        Ok(GraphNet { def, w })
    }

    /// The graph's output for a batch (N, 3, size, size), flattened to (N, D).
    pub fn forward(&self, b: &mut B, x: &B::T) -> Result<B::T> {
        let w = |n: &str| self.w.get(n).cloned().with_context(|| format!("the checkpoint has no weight `{n}`"));
        Ok(run(&self.def, b, &w, x, false)?.0)
    }
}

pub fn read_def(path: &Path, file: &TensorFile) -> Result<GraphDef> {
    serde_json::from_str(
        file.metadata.get(KEY).with_context(|| format!("{}: not an imported network", path.display()))?,
    )
    .with_context(|| format!("{}: unreadable graph description", path.display()))
}
