//! Shape inference: every value's shape per image, from the input size and
//! the weights' shapes. Layer tables, multiply-adds, the embedding width and
//! how many images fit one binding are all read from it.

use super::{GraphDef, Op, Window};
use crate::kernels::maxpool::out_len;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;

/// One op's output shape per image and its multiply-adds per image.
#[derive(Clone, Debug, PartialEq)]
pub struct OpShape {
    pub output: Vec<usize>,
    pub macs: usize,
}

/// Every value's shape per image (no batch dimension), and each op's.
#[derive(Clone, Debug)]
pub struct Shapes {
    pub values: HashMap<String, Vec<usize>>,
    pub ops: Vec<OpShape>,
    pub output: Vec<usize>,
}

impl Shapes {
    /// The largest value of one image, in bytes (f32).
    pub fn largest_value_bytes(&self) -> u64 {
        self.values.values().map(|s| s.iter().product::<usize>() as u64 * 4).max().unwrap_or(4)
    }

    /// The graph's output flattened per image (the embedding width).
    pub fn output_width(&self) -> usize {
        self.output.iter().product()
    }
}

/// The input's channels: what the first layer that reads it expects (3,
/// RGB, for every network here; a test graph may take others).
fn input_channels(def: &GraphDef, weight: &dyn Fn(&str) -> Option<Vec<usize>>) -> usize {
    let first = def.ops.iter().find(|op| op.inputs().contains(&def.input.as_str()));
    let numel = |w: &str| weight(w).map(|s| s.iter().product::<usize>());
    let c = match first {
        Some(Op::Conv { w, groups, .. }) => weight(w).and_then(|s| s.get(1).map(|c| c * groups)),
        Some(Op::BatchNorm { scale, .. } | Op::BnAct { scale, .. }) => numel(scale),
        Some(Op::Prelu { slope, .. }) => numel(slope),
        _ => None,
    };
    c.unwrap_or(3)
}

/// Shapes for inputs (C, size, size); `weight` gives a weight's shape.
pub fn infer(def: &GraphDef, size: usize, weight: &dyn Fn(&str) -> Option<Vec<usize>>) -> Result<Shapes> {
    let mut values = HashMap::from([(def.input.clone(), vec![input_channels(def, weight), size, size])]);
    let mut ops = Vec::with_capacity(def.ops.len());
    for op in &def.ops {
        let get =
            |n: &str| values.get(n).cloned().with_context(|| format!("value `{n}` is used before it is computed"));
        let w = |n: &str| weight(n).with_context(|| format!("no weight `{n}`"));
        let x = get(op.inputs()[0])?;
        let chw = |x: &[usize]| -> Result<(usize, usize, usize)> {
            match x {
                [c, h, w] => Ok((*c, *h, *w)),
                _ => bail!("{}: `{}` is {x:?}, not (C, H, W)", op.kind(), op.inputs()[0]),
            }
        };
        let s = match op {
            Op::Conv { w: wn, stride, pad, groups, .. }
            | Op::Fused { w: wn, conv: Some(Window { stride, pad, groups }), .. } => {
                let (c, h, wd) = chw(&x)?;
                let ws = w(wn)?;
                if ws.len() != 4 || ws[1] * groups != c || ws[0] % groups != 0 {
                    bail!("Conv `{}`: weight {ws:?} for {c} input channels in {groups} groups", op.output());
                }
                let (kh, kw) = (ws[2], ws[3]);
                if h + 2 * pad < kh || wd + 2 * pad < kw {
                    bail!("Conv `{}`: a {kh}x{kw} kernel on {h}x{wd} pixels", op.output());
                }
                let (ho, wo) = ((h + 2 * pad - kh) / stride + 1, (wd + 2 * pad - kw) / stride + 1);
                OpShape { output: vec![ws[0], ho, wo], macs: ws[0] * ho * wo * ws[1] * kh * kw }
            }
            Op::Linear { w: wn, .. } | Op::Fused { w: wn, conv: None, .. } => {
                let ws = w(wn)?;
                let inp: usize = x.iter().product();
                if ws.len() != 2 || ws[1] != inp {
                    bail!("Linear `{}`: weight {ws:?} for {inp} inputs", op.output());
                }
                OpShape { output: vec![ws[0]], macs: ws[0] * ws[1] }
            }
            Op::Add { b, .. } => {
                let other = get(b)?;
                if other != x {
                    bail!("Add `{}`: shapes {x:?} and {other:?}", op.output());
                }
                OpShape { output: x, macs: 0 }
            }
            Op::BnAct { skip: Some(k), .. } => {
                let other = get(k)?;
                if other != x {
                    bail!("`{}`: shapes {x:?} and skip {other:?}", op.output());
                }
                OpShape { output: x, macs: 0 }
            }
            Op::Flatten { .. } => OpShape { output: vec![x.iter().product()], macs: 0 },
            Op::GlobalAvgPool { .. } => {
                let (c, h, wd) = chw(&x)?;
                OpShape { output: vec![c, 1, 1], macs: c * h * wd }
            }
            Op::MaxPool { k, stride, pad, ceil, .. } => {
                let (c, h, wd) = chw(&x)?;
                if h + 2 * pad < *k || wd + 2 * pad < *k {
                    bail!("MaxPool `{}`: a {k}x{k} window on {h}x{wd} pixels", op.output());
                }
                OpShape {
                    output: vec![c, out_len(h, *k, *stride, *pad, *ceil), out_len(wd, *k, *stride, *pad, *ceil)],
                    macs: 0,
                }
            }
            Op::BatchNorm { .. } | Op::BnAct { .. } | Op::Prelu { .. } | Op::Act { .. } => {
                OpShape { output: x, macs: 0 }
            }
        };
        values.insert(op.output().to_string(), s.output.clone());
        ops.push(s);
    }
    let output =
        values.get(&def.output).cloned().with_context(|| format!("no op writes the output `{}`", def.output))?;
    Ok(Shapes { values, ops, output })
}
