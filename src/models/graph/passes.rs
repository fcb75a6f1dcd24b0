//! Rewrites of a graph, each giving the same outputs as the graph it
//! rewrites (tests/one_graph.rs checks each on the CPU references):
//! - `fuse`: batch norm with the PReLU and residual add after it, one
//!   `BnAct` op (one kernel each way in training);
//! - `fold`: an eval-mode batch norm folded into the convolution or linear
//!   layer before it (inference runs one op with a bias instead of two);
//! - `epilogues`: a convolution or linear layer with the activation that
//!   alone reads it and the residual add that alone reads that, one `Fused`
//!   op (inference runs one kernel instead of three);
//! - `last_uses`: after which op each value is dead, so an eval-mode run
//!   lets go of it there.

use super::{FusedAct, GraphDef, Op, Window};
use crate::kernels::batchnorm::EPS;
use std::collections::HashMap;

/// How many ops read each value (the graph's output counts as a reader).
fn readers(def: &GraphDef) -> HashMap<&str, usize> {
    let mut n: HashMap<&str, usize> = HashMap::from([(def.output.as_str(), 1)]);
    for op in &def.ops {
        for v in op.inputs() {
            *n.entry(v).or_default() += 1;
        }
    }
    n
}

/// The op after `from` that reads `value`, when it is the value's only reader.
fn only_reader<'a>(def: &'a GraphDef, n: &HashMap<&str, usize>, value: &str, from: usize) -> Option<(usize, &'a Op)> {
    if n.get(value) != Some(&1) {
        return None;
    }
    def.ops.iter().enumerate().skip(from + 1).find(|(_, op)| op.inputs().contains(&value))
}

/// `r` unless an earlier chain already took that op.
fn free<'a>(r: Option<(usize, &'a Op)>, gone: &[bool]) -> Option<(usize, &'a Op)> {
    r.filter(|(j, _)| !gone[*j])
}

/// Every batch norm, with the PReLU that alone reads it and then the add
/// that alone reads that, as one `BnAct` op at the place of the last of them
/// (where the skip input is computed too).
pub fn fuse(def: &GraphDef) -> GraphDef {
    let n = readers(def);
    // The fused op goes where the last op of its chain was.
    let mut at_place: HashMap<usize, Op> = HashMap::new();
    let mut gone = vec![false; def.ops.len()];
    for (i, op) in def.ops.iter().enumerate() {
        let Op::BatchNorm { x, scale, bias, mean, var, y } = op else { continue };
        let (mut last, mut out, mut slope, mut skip) = (i, y.clone(), None, None);
        gone[i] = true;
        if let Some((j, Op::Prelu { slope: s, y: py, .. })) = free(only_reader(def, &n, &out, last), &gone) {
            (last, slope, out) = (j, Some(s.clone()), py.clone());
            gone[j] = true;
        }
        if let Some((j, Op::Add { a, b, y: ay })) = free(only_reader(def, &n, &out, last), &gone) {
            let other = if *a == out { b.clone() } else { a.clone() };
            (last, skip, out) = (j, Some(other), ay.clone());
            gone[j] = true;
        }
        let (x, scale, bias, mean, var) = (x.clone(), scale.clone(), bias.clone(), mean.clone(), var.clone());
        at_place.insert(last, Op::BnAct { x, scale, bias, mean, var, slope, skip, y: out });
    }
    let ops = (0..def.ops.len())
        .filter_map(|k| at_place.remove(&k).or_else(|| (!gone[k]).then(|| def.ops[k].clone())))
        .collect();
    GraphDef { ops, ..def.clone() }
}

/// Every convolution and linear layer, with the PReLU or ReLU(6) that alone
/// reads it and then the add that alone reads that, as one `Fused` op at the
/// place of the last of them (where the skip input is computed too). For
/// eval mode: the fused op has no backward.
pub fn epilogues(def: &GraphDef) -> GraphDef {
    let n = readers(def);
    let mut at_place: HashMap<usize, Op> = HashMap::new();
    let mut gone = vec![false; def.ops.len()];
    for (i, op) in def.ops.iter().enumerate() {
        let (x, w, b, conv, y) = match op {
            Op::Conv { x, w, b, stride, pad, groups, y } => {
                (x, w, b, Some(Window { stride: *stride, pad: *pad, groups: *groups }), y)
            }
            Op::Linear { x, w, b, y } => (x, w, b, None, y),
            _ => continue,
        };
        let (mut last, mut out, mut act, mut skip) = (i, y.clone(), None, None);
        match free(only_reader(def, &n, &out, last), &gone) {
            Some((j, Op::Prelu { slope, y, .. })) => {
                (last, act, out) = (j, Some(FusedAct::Prelu(slope.clone())), y.clone());
                gone[j] = true;
            }
            Some((j, Op::Act { act: a, y, .. })) => {
                (last, act, out) = (j, Some(FusedAct::Fixed(*a)), y.clone());
                gone[j] = true;
            }
            _ => {}
        }
        if let Some((j, Op::Add { a, b, y })) = free(only_reader(def, &n, &out, last), &gone) {
            let other = if *a == out { b.clone() } else { a.clone() };
            (last, skip, out) = (j, Some(other), y.clone());
            gone[j] = true;
        }
        if last == i {
            continue;
        }
        gone[i] = true;
        let (x, w, b) = (x.clone(), w.clone(), b.clone());
        at_place.insert(last, Op::Fused { x, w, b, conv, act, skip, y: out });
    }
    let ops = (0..def.ops.len())
        .filter_map(|k| at_place.remove(&k).or_else(|| (!gone[k]).then(|| def.ops[k].clone())))
        .collect();
    GraphDef { ops, ..def.clone() }
}

/// A weight's shape and values, for the passes that compute new weights.
pub type HostWeight = (Vec<usize>, Vec<f32>);

/// Every eval-mode batch norm that alone reads a convolution's or linear
/// layer's output, folded into it: weight * s and bias beta + (b - mean) * s
/// per output channel, s = gamma / sqrt(running var + eps). Returns the
/// rewritten graph and its new weights (`<batch norm output>.folded_weight`
/// and `.folded_bias`); `get` gives the weights it reads.
pub fn fold(
    def: &GraphDef,
    get: &dyn Fn(&str) -> Option<HostWeight>,
) -> anyhow::Result<(GraphDef, Vec<(String, Vec<usize>, Vec<f32>)>)> {
    let n = readers(def);
    let mut ops: Vec<Op> = def.ops.clone();
    let mut gone = vec![false; ops.len()];
    let mut new = Vec::new();
    let need = |w: &str| get(w).ok_or_else(|| anyhow::anyhow!("no weight `{w}` to fold"));
    for i in 0..ops.len() {
        let (Op::Conv { y: v, .. } | Op::Linear { y: v, .. }) = &ops[i] else { continue };
        let Some((j, Op::BatchNorm { scale, bias, mean, var, y, .. })) = only_reader(def, &n, v, i) else { continue };
        let [gamma, beta, mean, var] = [scale, bias, mean, var].map(|w| need(w));
        let (gamma, beta, mean, var) = (gamma?.1, beta?.1, mean?.1, var?.1);
        let (wn, bn) = match &ops[i] {
            Op::Conv { w, b, .. } | Op::Linear { w, b, .. } => (w.clone(), b.clone()),
            _ => unreachable!("matched above"),
        };
        let (shape, w) = need(&wn)?;
        let cout = shape[0];
        let s: Vec<f32> = (0..cout).map(|c| (gamma[c] as f64 / (var[c] as f64 + EPS as f64).sqrt()) as f32).collect();
        let per_out = w.len() / cout;
        let folded_w: Vec<f32> = w.iter().enumerate().map(|(k, v)| v * s[k / per_out]).collect();
        let old_bias = bn.as_deref().map(need).transpose()?.map(|(_, b)| b);
        let folded_b: Vec<f32> = (0..cout)
            .map(|c| match &old_bias {
                Some(b) => beta[c] + (b[c] - mean[c]) * s[c],
                None => beta[c] - mean[c] * s[c],
            })
            .collect();
        let (fw, fb) = (format!("{y}.folded_weight"), format!("{y}.folded_bias"));
        new.push((fw.clone(), shape, folded_w));
        new.push((fb.clone(), vec![cout], folded_b));
        let y = y.clone();
        match &mut ops[i] {
            Op::Conv { w, b, y: out, .. } | Op::Linear { w, b, y: out, .. } => {
                (*w, *b, *out) = (fw, Some(fb), y);
            }
            _ => unreachable!("matched above"),
        }
        gone[j] = true;
    }
    let ops = ops.into_iter().zip(gone).filter(|(_, g)| !g).map(|(op, _)| op).collect();
    Ok((GraphDef { ops, ..def.clone() }, new))
}

/// For each op, the values that no later op reads (and that are not the
/// graph's output): an eval-mode run drops them after that op.
pub fn last_uses(def: &GraphDef) -> Vec<Vec<String>> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, op) in def.ops.iter().enumerate() {
        for v in op.inputs() {
            last.insert(v, i);
        }
    }
    let mut dead = vec![Vec::new(); def.ops.len()];
    for (v, i) in last {
        if v != def.output {
            dead[i].push(v.to_string());
        }
    }
    dead
}
