//! The executor: a graph's forward pass in eval or training mode, over its
//! ops in order, and its backward pass, composed from each op's own
//! backward kernels. Every network runs here.

use super::passes::last_uses;
use super::{FusedAct, GraphDef, Op, Window};
use crate::kernels::batchnorm::{BatchNorm, BnParams, BnSaved};
use crate::kernels::conv2d::Conv2d;
use crate::kernels::epilogue::{Epilogue, OutAct};
use crate::kernels::linear::Linear;
use crate::kernels::maxpool::MaxPool;
use crate::nn::Backend;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;

/// Batch norms use the batch's statistics and update the running ones
/// (`Train`, which also keeps what `backward` needs), or use the running
/// ones (`Eval`, which lets each value go after its last reader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Eval,
    Train,
}

/// What a training forward pass keeps for the backward pass: every value,
/// and each batch norm's batch statistics (by the op's output).
pub struct Saved<T> {
    values: HashMap<String, T>,
    bn: HashMap<String, BnSaved<T>>,
}

/// Looks a weight up by its graph name.
pub type Weights<'a, T> = &'a dyn Fn(&str) -> Result<T>;

/// Runs the graph on a batch (N, 3, size, size). The output is flattened to
/// (N, D); in training mode, with what `backward` needs.
pub fn run<B: Backend>(
    def: &GraphDef,
    b: &mut B,
    w: Weights<B::T>,
    x: &B::T,
    mode: Mode,
) -> Result<(B::T, Option<Saved<B::T>>)> {
    // Eval mode: a value's storage serves the next values once its last
    // reader is recorded (the backend's memory plan by liveness).
    b.plan_memory(mode == Mode::Eval);
    let r = run_ops(def, b, w, x, mode);
    b.plan_memory(false);
    r
}

fn run_ops<B: Backend>(
    def: &GraphDef,
    b: &mut B,
    w: Weights<B::T>,
    x: &B::T,
    mode: Mode,
) -> Result<(B::T, Option<Saved<B::T>>)> {
    let train = mode == Mode::Train;
    let dead = if train { Vec::new() } else { last_uses(def) };
    let mut v: HashMap<String, B::T> = HashMap::from([(def.input.clone(), x.clone())]);
    let mut bn_saved = HashMap::new();
    let get = |v: &HashMap<String, B::T>, n: &str| -> Result<B::T> {
        v.get(n).cloned().with_context(|| format!("value `{n}` is used before it is computed"))
    };
    for (i, op) in def.ops.iter().enumerate() {
        let out = match op {
            Op::Conv { x, w: wn, b: bias, .. } => {
                let (xt, wt) = (get(&v, x)?, w(wn)?);
                let s = conv_shape(b, op, &xt, &wt)?;
                let bt = bias.as_deref().map(w).transpose()?;
                b.conv2d(&s, &xt, &wt, bt.as_ref())?
            }
            Op::BatchNorm { x, scale, bias, mean, var, .. } => {
                let xt = get(&v, x)?;
                let p = BnParams { gamma: w(scale)?, beta: w(bias)?, running_mean: w(mean)?, running_var: w(var)? };
                let (y, saved) = b.batchnorm(&layout(b, &xt), &p, &xt, train)?;
                if train {
                    bn_saved.insert(op.output().to_string(), saved);
                }
                y
            }
            Op::BnAct { x, scale, bias, mean, var, slope, skip, .. } => {
                let xt = get(&v, x)?;
                let p = BnParams { gamma: w(scale)?, beta: w(bias)?, running_mean: w(mean)?, running_var: w(var)? };
                let slope = slope.as_deref().map(w).transpose()?;
                let skip = skip.as_deref().map(|k| get(&v, k)).transpose()?;
                let (y, saved) = b.bn_act(&layout(b, &xt), &p, &xt, slope.as_ref(), skip.as_ref(), train)?;
                if train {
                    bn_saved.insert(op.output().to_string(), saved);
                }
                y
            }
            Op::Fused { x, w: wn, b: bias, conv, act, skip, .. } => {
                let (xt, wt) = (get(&v, x)?, w(wn)?);
                let bt = bias.as_deref().map(w).transpose()?;
                let slope = match act {
                    Some(FusedAct::Prelu(s)) => Some(w(s)?),
                    _ => None,
                };
                let skip = skip.as_deref().map(|k| get(&v, k)).transpose()?;
                let act = match (act, &slope) {
                    (Some(FusedAct::Prelu(_)), Some(s)) => Some(OutAct::Prelu(s)),
                    (Some(FusedAct::Fixed(a)), _) => Some(OutAct::Fixed(*a)),
                    _ => None,
                };
                let e = Epilogue { act, skip: skip.as_ref() };
                match conv {
                    Some(win) => {
                        let s = window_shape(b, win, &xt, &wt, bt.is_some())?;
                        b.conv2d_with(&s, &xt, &wt, bt.as_ref(), &e)?
                    }
                    None => {
                        let (s, x2) = linear_shape(b, &xt, &wt, bt.is_some())?;
                        b.linear_with(&s, &x2, &wt, bt.as_ref(), &e)?
                    }
                }
            }
            Op::Prelu { x, slope, .. } => b.prelu(&get(&v, x)?, &w(slope)?)?,
            Op::Act { x, act, .. } => b.act(*act, &get(&v, x)?)?,
            Op::Add { a, b: c, .. } => b.add(&get(&v, a)?, &get(&v, c)?)?,
            Op::Flatten { x, .. } => {
                let xt = get(&v, x)?;
                let s = b.shape(&xt).to_vec();
                b.reshape(&xt, &[s[0], s[1..].iter().product()])?
            }
            Op::Linear { x, w: wn, b: bias, .. } => {
                let (xt, wt) = (get(&v, x)?, w(wn)?);
                let (s, x2) = linear_shape(b, &xt, &wt, bias.is_some())?;
                let bt = bias.as_deref().map(w).transpose()?;
                b.linear(&s, &x2, &wt, bt.as_ref())?
            }
            Op::GlobalAvgPool { x, .. } => {
                let xt = get(&v, x)?;
                let (s, ones) = pool_as_conv(b, &xt)?;
                b.conv2d(&s, &xt, &ones, None)?
            }
            Op::MaxPool { x, .. } => {
                let xt = get(&v, x)?;
                b.maxpool(&maxpool_shape(b, op, &xt)?, &xt)?
            }
        };
        v.insert(op.output().to_string(), out);
        for gone in dead.get(i).into_iter().flatten() {
            v.remove(gone);
        }
    }
    let out = get(&v, &def.output)?;
    let s = b.shape(&out).to_vec();
    let flat = b.reshape(&out, &[s[0], s[1..].iter().product()])?;
    Ok((flat, train.then_some(Saved { values: v, bn: bn_saved })))
}

/// Gradients of the graph's weights (by graph name, passed to `grad`) given
/// d output, from a training-mode pass. The input's gradient is never
/// computed: the first layer's input is the image. (One match arm per
/// operator, the mirror of `run`'s: it reads best as one function.)
pub fn backward<B: Backend>(
    def: &GraphDef,
    b: &mut B,
    w: Weights<B::T>,
    saved: &Saved<B::T>,
    dout: &B::T,
    grad: &mut dyn FnMut(&mut B, &str, B::T) -> Result<()>,
) -> Result<()> {
    // Each value's gradient is dropped once the op that reads it is
    // recorded: its storage serves the gradients after it.
    b.plan_memory(true);
    let r = backward_ops(def, b, w, saved, dout, grad);
    b.plan_memory(false);
    r
}

fn backward_ops<B: Backend>(
    def: &GraphDef,
    b: &mut B,
    w: Weights<B::T>,
    saved: &Saved<B::T>,
    dout: &B::T,
    grad: &mut dyn FnMut(&mut B, &str, B::T) -> Result<()>,
) -> Result<()> {
    let val = |n: &str| saved.values.get(n).cloned().with_context(|| format!("value `{n}` was not saved"));
    let bn_of = |op: &Op| saved.bn.get(op.output()).context("a batch norm's backward needs a training-mode pass");
    let out_shape = b.shape(&val(&def.output)?).to_vec();
    let mut d: HashMap<String, B::T> = HashMap::from([(def.output.clone(), b.reshape(dout, &out_shape)?)]);
    // A value read by several ops gets the sum of their gradients.
    fn flow<B: Backend>(b: &mut B, d: &mut HashMap<String, B::T>, input: &str, name: &str, g: B::T) -> Result<()> {
        if name == input {
            return Ok(());
        }
        let g = match d.remove(name) {
            Some(prev) => b.add(&prev, &g)?,
            None => g,
        };
        d.insert(name.to_string(), g);
        Ok(())
    }
    let input = def.input.as_str();
    for op in def.ops.iter().rev() {
        let Some(dy) = d.remove(op.output()) else { continue };
        match op {
            Op::Conv { x, w: wn, b: bias, .. } => {
                let (xt, wt) = (val(x)?, w(wn)?);
                let s = conv_shape(b, op, &xt, &wt)?;
                let (dw, db) = if x == input {
                    b.conv2d_backward_params(&s, &xt, &wt, &dy)?
                } else {
                    let g = b.conv2d_backward(&s, &xt, &wt, &dy)?;
                    flow(b, &mut d, input, x, g.dx)?;
                    (g.dw, g.db)
                };
                grad(b, wn, dw)?;
                if let (Some(bn), Some(db)) = (bias, db) {
                    grad(b, bn, db)?;
                }
            }
            Op::BatchNorm { x, scale, bias, mean, var, .. } => {
                let xt = val(x)?;
                let p = BnParams { gamma: w(scale)?, beta: w(bias)?, running_mean: w(mean)?, running_var: w(var)? };
                let (dx, dg, db) = b.batchnorm_backward(&layout(b, &xt), &p, &xt, bn_of(op)?, &dy)?;
                grad(b, scale, dg)?;
                grad(b, bias, db)?;
                flow(b, &mut d, input, x, dx)?;
            }
            Op::BnAct { x, scale, bias, mean, var, slope, skip, .. } => {
                let xt = val(x)?;
                let p = BnParams { gamma: w(scale)?, beta: w(bias)?, running_mean: w(mean)?, running_var: w(var)? };
                let st = slope.as_deref().map(w).transpose()?;
                let (dx, dg, db, ds) = b.bn_act_backward(&layout(b, &xt), &p, &xt, bn_of(op)?, st.as_ref(), &dy)?;
                if let (Some(sn), Some(ds)) = (slope, ds) {
                    grad(b, sn, ds)?;
                }
                grad(b, scale, dg)?;
                grad(b, bias, db)?;
                if let Some(k) = skip {
                    flow(b, &mut d, input, k, dy.clone())?;
                }
                flow(b, &mut d, input, x, dx)?;
            }
            Op::Fused { .. } => bail!("`{}` is an inference form's op: it has no backward", op.output()),
            Op::Act { x, act, .. } => {
                let dx = b.act_backward(*act, &val(x)?, &dy)?;
                flow(b, &mut d, input, x, dx)?;
            }
            Op::Prelu { x, slope, .. } => {
                let (dx, ds) = b.prelu_backward(&val(x)?, &w(slope)?, &dy)?;
                grad(b, slope, ds)?;
                flow(b, &mut d, input, x, dx)?;
            }
            Op::Add { a, b: c, .. } => {
                flow(b, &mut d, input, a, dy.clone())?;
                flow(b, &mut d, input, c, dy)?;
            }
            Op::Flatten { x, .. } => {
                let s = b.shape(&val(x)?).to_vec();
                let dx = b.reshape(&dy, &s)?;
                flow(b, &mut d, input, x, dx)?;
            }
            Op::Linear { x, w: wn, b: bias, .. } => {
                let (xt, wt) = (val(x)?, w(wn)?);
                let (s, x2) = linear_shape(b, &xt, &wt, bias.is_some())?;
                let g = b.linear_backward(&s, &x2, &wt, &dy)?;
                grad(b, wn, g.dw)?;
                if let (Some(bn), Some(db)) = (bias, g.db) {
                    grad(b, bn, db)?;
                }
                let dx = b.reshape(&g.dx, b.shape(&xt))?;
                flow(b, &mut d, input, x, dx)?;
            }
            Op::GlobalAvgPool { x, .. } => {
                let xt = val(x)?;
                let (s, ones) = pool_as_conv(b, &xt)?;
                let g = b.conv2d_backward(&s, &xt, &ones, &dy)?;
                flow(b, &mut d, input, x, g.dx)?;
            }
            Op::MaxPool { x, .. } => {
                let xt = val(x)?;
                let dx = b.maxpool_backward(&maxpool_shape(b, op, &xt)?, &xt, &dy)?;
                flow(b, &mut d, input, x, dx)?;
            }
        }
    }
    Ok(())
}

/// Batch norm's (n, c, m) for (N, C, H, W) or (N, C).
fn layout<B: Backend>(b: &B, x: &B::T) -> BatchNorm {
    let s = b.shape(x);
    BatchNorm { n: s[0], c: s[1], m: s[2..].iter().product() }
}

fn conv_shape<B: Backend>(b: &B, op: &Op, x: &B::T, w: &B::T) -> Result<Conv2d> {
    let Op::Conv { b: bias, stride, pad, groups, .. } = op else { bail!("not a convolution") };
    window_shape(b, &Window { stride: *stride, pad: *pad, groups: *groups }, x, w, bias.is_some())
}

fn window_shape<B: Backend>(b: &B, win: &Window, x: &B::T, w: &B::T, bias: bool) -> Result<Conv2d> {
    let s = Conv2d::from_shapes(b.shape(x), b.shape(w), win.stride, win.pad, win.groups, bias);
    s.validate()?;
    Ok(s)
}

/// The product's shape, and x as one row per image.
fn linear_shape<B: Backend>(b: &B, x: &B::T, w: &B::T, bias: bool) -> Result<(Linear, B::T)> {
    let (n, ws) = (b.shape(x)[0], b.shape(w).to_vec());
    if ws.len() != 2 || b.shape(x)[1..].iter().product::<usize>() != ws[1] {
        bail!("a linear layer of weight {ws:?} on values of shape {:?}", b.shape(x));
    }
    Ok((Linear { n, inp: ws[1], out: ws[0], bias }, b.reshape(x, &[n, ws[1]])?))
}

fn maxpool_shape<B: Backend>(b: &B, op: &Op, x: &B::T) -> Result<MaxPool> {
    let Op::MaxPool { k, stride, pad, ceil, .. } = op else { bail!("not a max pooling") };
    let s = b.shape(x);
    if s.len() != 4 {
        bail!("max pooling of values of shape {s:?}");
    }
    Ok(MaxPool { n: s[0], c: s[1], h: s[2], w: s[3], k: *k, stride: *stride, pad: *pad, ceil: *ceil })
}

/// Global average pooling as a depthwise convolution with 1/(h*w) weights.
fn pool_as_conv<B: Backend>(b: &mut B, x: &B::T) -> Result<(Conv2d, B::T)> {
    let s = b.shape(x).to_vec();
    let (c, h, w) = (s[1], s[2], s[3]);
    let ones = b.upload(&vec![1.0 / (h * w) as f32; c * h * w], &[c, 1, h, w])?;
    Ok((Conv2d::from_shapes(&s, &[c, 1, h, w], 1, 0, c, false), ones))
}
