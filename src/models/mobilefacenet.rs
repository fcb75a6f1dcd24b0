//! MobileFaceNet (Chen et al. 2018, Table 1) as a list of blocks, with
//! PyTorch's parameter names (`backbone.conv1`, `backbone.bottlenecks.{i}.block.{j}`, ...).

use crate::nn::{Block, ConvBn};

/// Bottleneck groups (expansion t, output channels c, repeats n, first stride s).
pub const BOTTLENECKS: [(usize, usize, usize, usize); 5] =
    [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)];

fn conv_bn(name: String, cin: usize, cout: usize, k: usize, stride: usize, groups: usize, prelu: bool) -> ConvBn {
    ConvBn { name, cin, cout, k, stride, pad: if k == 3 { 1 } else { 0 }, groups, prelu }
}

fn single(layer: ConvBn) -> Block {
    Block { layers: vec![layer], residual: false }
}

/// The backbone for 112x112 inputs; `embedding` is 128, or the class count
/// for the plain softmax classifier.
pub fn blocks(embedding: usize) -> Vec<Block> {
    let b = |s: &str| format!("backbone.{s}");
    let mut v =
        vec![single(conv_bn(b("conv1"), 3, 64, 3, 2, 1, true)), single(conv_bn(b("dw_conv1"), 64, 64, 3, 1, 64, true))];
    let (mut cin, mut i) = (64, 0);
    for (t, c, n, s) in BOTTLENECKS {
        for r in 0..n {
            let stride = if r == 0 { s } else { 1 };
            let e = cin * t;
            let name = |j: usize| b(&format!("bottlenecks.{i}.block.{j}"));
            v.push(Block {
                layers: vec![
                    conv_bn(name(0), cin, e, 1, 1, 1, true),
                    conv_bn(name(1), e, e, 3, stride, e, true),
                    conv_bn(name(2), e, c, 1, 1, 1, false),
                ],
                residual: stride == 1 && cin == c,
            });
            cin = c;
            i += 1;
        }
    }
    v.push(single(conv_bn(b("conv2"), cin, 512, 1, 1, 1, true)));
    v.push(single(conv_bn(b("gdconv"), 512, 512, 7, 1, 512, false)));
    v.push(single(conv_bn(b("linear"), 512, embedding, 1, 1, 1, false)));
    v
}
