//! Running a graph: the eval or training forward pass over its layers in
//! order, and the backward pass for fine-tuning.

use super::{GraphDef, Op};
use crate::kernels::batchnorm::{BatchNorm, BnParams};
use crate::kernels::conv2d::Conv2d;
use crate::kernels::linear::Linear;
use crate::nn::Backend;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;

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
            Op::Act { x, act, .. } => (op_output(op), b.act(*act, &get(&v, x)?)?),
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
/// first layer. (One match arm per operator, the mirror of `run`'s: it reads
/// best as one function, slightly over the usual length.)
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
                let dx = b.act_backward(*act, &val(x)?, &dy)?;
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
