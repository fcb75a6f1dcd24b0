//! MTCNN's three networks (Zhang et al. 2016, as facenet-pytorch ships them)
//! built as graphs, with the weight names of `data/mtcnn/mtcnn.safetensors`
//! (layer tables: data/mtcnn/README.md). Each network's heads are one layer
//! (`<net>.head`: the heads only differ in their output rows, so one
//! dispatch serves them) whose output columns are named parts: `face` (two
//! scores, softmax on the host), `box` (four offsets) and, for O-Net,
//! `landmarks` (five x's, then five y's).

use super::builder::{Builder, Built, ConvForm};
use super::graph::OutputPart;
use crate::nn::Init;

fn conv_prelu(g: &mut Builder, net: &str, i: usize, x: &str, (cin, cout): (usize, usize), k: usize) -> String {
    let form = ConvForm { k, stride: 1, pad: 0, groups: 1, bias: true };
    let name = format!("{net}.conv{i}");
    let y = g.conv(x, &name, cin, cout, form, Init::DefaultUniform { fan_in: cin * k * k }, &name);
    g.prelu(&y, &format!("{net}.prelu{i}"), cout, &format!("{net}.prelu{i}"))
}

fn dense_prelu(g: &mut Builder, net: &str, i: usize, x: &str, (inp, out): (usize, usize)) -> String {
    let name = format!("{net}.dense{i}");
    let y = g.linear(x, &name, inp, out, Init::DefaultUniform { fan_in: inp }, &name);
    g.prelu(&y, &format!("{net}.prelu{i}"), out, &format!("{net}.prelu{i}"))
}

fn parts(landmarks: bool) -> Vec<OutputPart> {
    let mut v = vec![OutputPart::new("face", 0, 2), OutputPart::new("box", 2, 4)];
    if landmarks {
        v.push(OutputPart::new("landmarks", 6, 10));
    }
    v
}

fn finish(g: Builder, net: &str, size: usize, landmarks: bool) -> Built {
    let mut built = g.finish(&format!("MTCNN {net}"), "input", &format!("{net}.head"), size);
    built.graph.parts = parts(landmarks);
    built
}

/// P-Net: fully convolutional, on any image of at least 12x12 pixels.
pub fn pnet() -> Built {
    let mut g = Builder::new();
    let x = conv_prelu(&mut g, "pnet", 1, "input", (3, 10), 3);
    let x = g.maxpool(&x, 2, 2, "pnet.pool1");
    let x = conv_prelu(&mut g, "pnet", 2, &x, (10, 16), 3);
    let x = conv_prelu(&mut g, "pnet", 3, &x, (16, 32), 3);
    let form = ConvForm { k: 1, stride: 1, pad: 0, groups: 1, bias: true };
    g.conv(&x, "pnet.head", 32, 6, form, Init::DefaultUniform { fan_in: 32 }, "pnet.head");
    finish(g, "pnet", 12, false)
}

/// R-Net on 24x24 crops.
pub fn rnet() -> Built {
    let mut g = Builder::new();
    let x = conv_prelu(&mut g, "rnet", 1, "input", (3, 28), 3);
    let x = g.maxpool(&x, 3, 2, "rnet.pool1");
    let x = conv_prelu(&mut g, "rnet", 2, &x, (28, 48), 3);
    let x = g.maxpool(&x, 3, 2, "rnet.pool2");
    let x = conv_prelu(&mut g, "rnet", 3, &x, (48, 64), 2);
    let x = g.flatten(&x, "rnet.flatten");
    let x = dense_prelu(&mut g, "rnet", 4, &x, (576, 128));
    g.linear(&x, "rnet.head", 128, 6, Init::DefaultUniform { fan_in: 128 }, "rnet.head");
    finish(g, "rnet", 24, false)
}

/// O-Net on 48x48 crops.
pub fn onet() -> Built {
    let mut g = Builder::new();
    let x = conv_prelu(&mut g, "onet", 1, "input", (3, 32), 3);
    let x = g.maxpool(&x, 3, 2, "onet.pool1");
    let x = conv_prelu(&mut g, "onet", 2, &x, (32, 64), 3);
    let x = g.maxpool(&x, 3, 2, "onet.pool2");
    let x = conv_prelu(&mut g, "onet", 3, &x, (64, 64), 3);
    let x = g.maxpool(&x, 2, 2, "onet.pool3");
    let x = conv_prelu(&mut g, "onet", 4, &x, (64, 128), 2);
    let x = g.flatten(&x, "onet.flatten");
    let x = dense_prelu(&mut g, "onet", 5, &x, (1152, 256));
    g.linear(&x, "onet.head", 256, 16, Init::DefaultUniform { fan_in: 256 }, "onet.head");
    finish(g, "onet", 48, true)
}
