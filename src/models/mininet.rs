//! MiniNetwork: conv3x3 3->32->64->128 (padding 1, bias, ReLU) and one linear
//! layer 128*H*W -> classes. PyTorch names: `features.{0,2,4}`, `fc`.
//!
//! At 112x112 its activations outgrow a 128 MiB storage binding at batch 32,
//! so the batch is processed in chunks that fit; weight gradients add up
//! over the chunks.

use crate::kernels::activation::Act;
use crate::kernels::conv2d::Conv2d;
use crate::kernels::linear::Linear;
use crate::nn::{Backend, Init, ParamSpec, ParamStore};
use anyhow::Result;

pub const CHANNELS: [usize; 4] = [3, 32, 64, 128];
pub const CONVS: [&str; 3] = ["features.0", "features.2", "features.4"];

pub fn param_specs(input: usize, classes: usize) -> Vec<ParamSpec> {
    let mut v = Vec::new();
    for (i, name) in CONVS.iter().enumerate() {
        let (cin, cout) = (CHANNELS[i], CHANNELS[i + 1]);
        let fan_in = cin * 9;
        v.push(ParamSpec {
            name: format!("{name}.weight"),
            shape: vec![cout, cin, 3, 3],
            init: Init::KaimingNormal { fan_in },
            trainable: true,
        });
        v.push(ParamSpec { name: format!("{name}.bias"), shape: vec![cout], init: Init::Const(0.0), trainable: true });
    }
    let fan_in = 128 * input * input;
    v.push(ParamSpec {
        name: "fc.weight".into(),
        shape: vec![classes, fan_in],
        init: Init::KaimingNormal { fan_in },
        trainable: true,
    });
    v.push(ParamSpec { name: "fc.bias".into(), shape: vec![classes], init: Init::Const(0.0), trainable: true });
    v
}

pub fn convs(n: usize, input: usize) -> [Conv2d; 3] {
    let c = |i: usize| Conv2d { bias: true, ..Conv2d::new(n, CHANNELS[i], (input, input), CHANNELS[i + 1], 3, 1, 1) };
    [c(0), c(1), c(2)]
}

/// Images per chunk so that the largest activation (n x 128 x H x W floats)
/// fits in one storage binding.
pub fn chunk_size(input: usize, max_binding_bytes: u64) -> usize {
    let per_image = (128 * input * input * 4) as u64;
    (max_binding_bytes / per_image).max(1) as usize
}

/// What one chunk's backward pass needs.
pub struct ChunkCache<T> {
    inputs: [T; 3],
    pre_relu: [T; 3],
    features: T,
    fc: Linear,
}

impl<T> ChunkCache<T> {
    /// The chunk's input images.
    pub fn input(&self) -> &T {
        &self.inputs[0]
    }
}

pub fn forward_chunk<B: Backend>(
    b: &mut B,
    p: &ParamStore<B::T>,
    x: &B::T,
    classes: usize,
) -> Result<(B::T, ChunkCache<B::T>)> {
    let s = b.shape(x).to_vec();
    let (n, input) = (s[0], s[2]);
    let mut h = x.clone();
    let mut inputs = Vec::new();
    let mut pre = Vec::new();
    for (conv, name) in convs(n, input).iter().zip(CONVS) {
        inputs.push(h.clone());
        let y = b.conv2d(conv, &h, p.get(&format!("{name}.weight")), Some(p.get(&format!("{name}.bias"))))?;
        h = b.act(Act::Relu, &y)?;
        pre.push(y);
    }
    let fc = Linear { n, inp: 128 * input * input, out: classes, bias: true };
    let features = b.reshape(&h, &[n, fc.inp])?;
    let logits = b.linear(&fc, &features, p.get("fc.weight"), Some(p.get("fc.bias")))?;
    let to3 = |v: Vec<B::T>| -> [B::T; 3] { [v[0].clone(), v[1].clone(), v[2].clone()] };
    Ok((logits, ChunkCache { inputs: to3(inputs), pre_relu: to3(pre), features, fc }))
}

pub fn backward_chunk<B: Backend>(
    b: &mut B,
    p: &mut ParamStore<B::T>,
    c: &ChunkCache<B::T>,
    dlogits: &B::T,
) -> Result<()> {
    let g = b.linear_backward(&c.fc, &c.features, p.get("fc.weight"), dlogits)?;
    p.add_grad(b, "fc.weight", g.dw)?;
    p.add_grad(b, "fc.bias", g.db.expect("fc has a bias"))?;
    let s = b.shape(&c.inputs[0]).to_vec();
    let mut d = b.reshape(&g.dx, b.shape(&c.pre_relu[2]))?;
    let convs = convs(s[0], s[2]);
    for i in (0..3).rev() {
        let dy = b.act_backward(Act::Relu, &c.pre_relu[i], &d)?;
        let w = p.get(&format!("{}.weight", CONVS[i]));
        // The first convolution's input is the image: no gradient for it.
        let (dw, db) = if i == 0 {
            b.conv2d_backward_params(&convs[i], &c.inputs[i], w, &dy)?
        } else {
            let g = b.conv2d_backward(&convs[i], &c.inputs[i], w, &dy)?;
            d = g.dx;
            (g.dw, g.db)
        };
        p.add_grad(b, &format!("{}.weight", CONVS[i]), dw)?;
        p.add_grad(b, &format!("{}.bias", CONVS[i]), db.expect("conv has a bias"))?;
    }
    Ok(())
}
