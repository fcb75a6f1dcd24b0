//! MiniNetwork built as a graph: conv3x3 3->32->64->128 (padding 1, bias,
//! ReLU) and one linear layer 128*H*W -> classes. PyTorch names:
//! `features.{0,2,4}`, `fc`. At 112x112 its activations outgrow a 128 MiB
//! storage binding at batch 32; the executor runs such batches in parts
//! (`Program::images_per_run`).

use super::builder::{Builder, Built, ConvForm};
use crate::kernels::activation::Act;
use crate::nn::Init;

pub const CHANNELS: [usize; 4] = [3, 32, 64, 128];
pub const CONVS: [&str; 3] = ["features.0", "features.2", "features.4"];

pub fn build(input: usize, classes: usize) -> Built {
    let mut g = Builder::new();
    let mut x = "input".to_string();
    for (i, name) in CONVS.iter().enumerate() {
        let (cin, cout) = (CHANNELS[i], CHANNELS[i + 1]);
        let form = ConvForm { k: 3, stride: 1, pad: 1, groups: 1, bias: true };
        let init = Init::KaimingNormal { fan_in: cin * 9 };
        let y = g.conv(&x, name, cin, cout, form, init, &format!("{name}.conv"));
        x = g.act(&y, Act::Relu, &format!("{name}.relu"));
    }
    let x = g.flatten(&x, "features");
    let fan_in = 128 * input * input;
    g.linear(&x, "fc", fan_in, classes, Init::KaimingNormal { fan_in }, "logits");
    g.finish("MiniNetwork", "input", "logits", input)
}
