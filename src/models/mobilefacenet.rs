//! MobileFaceNet (Chen et al. 2018, Table 1) built as a graph, with
//! PyTorch's parameter names (`backbone.conv1.conv.weight`,
//! `backbone.bottlenecks.{i}.block.{j}.bn.weight`, ...): every layer is a
//! convolution without bias, a batch norm and (but for the projections and
//! the last two) a PReLU; a bottleneck that keeps its shape adds its input.

use super::builder::{Builder, Built, ConvForm};
use crate::nn::Init;

/// Bottleneck groups (expansion t, output channels c, repeats n, first stride s).
pub const BOTTLENECKS: [(usize, usize, usize, usize); 5] =
    [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)];

/// Conv + batch norm + optional PReLU named `backbone.<name>`; its output.
fn layer(
    g: &mut Builder,
    x: &str,
    name: &str,
    (cin, cout): (usize, usize),
    k: usize,
    stride: usize,
    groups: usize,
    prelu: bool,
) -> String {
    let n = format!("backbone.{name}");
    let form = ConvForm { k, stride, pad: if k == 3 { 1 } else { 0 }, groups, bias: false };
    let fan_in = cin / groups * k * k;
    let y = g.conv(x, &format!("{n}.conv"), cin, cout, form, Init::DefaultUniform { fan_in }, &format!("{n}.conv"));
    let y = g.batchnorm(&y, &format!("{n}.bn"), cout, &format!("{n}.bn"));
    if prelu {
        g.prelu(&y, &format!("{n}.act"), cout, &format!("{n}.act"))
    } else {
        y
    }
}

/// The network for 112x112 inputs; `embedding` is 128, or the class count
/// for the plain softmax classifier (whose output is then `logits`).
pub fn build(embedding: usize, softmax: bool) -> Built {
    let mut g = Builder::new();
    let mut x = layer(&mut g, "input", "conv1", (3, 64), 3, 2, 1, true);
    x = layer(&mut g, &x, "dw_conv1", (64, 64), 3, 1, 64, true);
    let (mut cin, mut i) = (64, 0);
    for (t, c, n, s) in BOTTLENECKS {
        for r in 0..n {
            let stride = if r == 0 { s } else { 1 };
            let e = cin * t;
            let name = |j: usize| format!("bottlenecks.{i}.block.{j}");
            let block_in = x.clone();
            x = layer(&mut g, &x, &name(0), (cin, e), 1, 1, 1, true);
            x = layer(&mut g, &x, &name(1), (e, e), 3, stride, e, true);
            x = layer(&mut g, &x, &name(2), (e, c), 1, 1, 1, false);
            if stride == 1 && cin == c {
                x = g.add(&block_in, &x, &format!("backbone.bottlenecks.{i}.add"));
            }
            cin = c;
            i += 1;
        }
    }
    x = layer(&mut g, &x, "conv2", (cin, 512), 1, 1, 1, true);
    x = layer(&mut g, &x, "gdconv", (512, 512), 7, 1, 512, false);
    x = layer(&mut g, &x, "linear", (512, embedding), 1, 1, 1, false);
    let out = if softmax { "logits" } else { "embedding" };
    g.flatten(&x, out);
    g.finish("MobileFaceNet", "input", out, 112)
}
