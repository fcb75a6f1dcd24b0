//! Layers with explicit forward and backward passes. Each forward returns
//! what its backward needs; gradients go into the parameter store.

use super::{Backend, ParamStore};
use crate::kernels::batchnorm::{BatchNorm, BnParams, BnSaved, EPS};
use crate::kernels::conv2d::Conv2d;
use anyhow::Result;
use std::collections::HashMap;

/// ConvBn layers' convolutions with their eval-mode batch norms folded in,
/// by layer name: weight * s and bias beta - mean * s per output channel,
/// s = gamma / sqrt(running var + eps). Inference runs one convolution with
/// a bias where it ran a convolution and a normalisation.
pub type Folded<T> = HashMap<String, (T, T)>;

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// PyTorch's default for conv and linear weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    DefaultUniform {
        fan_in: usize,
    },
    /// Kaiming normal for ReLU: N(0, 2/fan_in).
    KaimingNormal {
        fan_in: usize,
    },
    /// Xavier uniform: U(-sqrt(6/(fan_in+fan_out)), +...).
    XavierUniform {
        fan_in: usize,
        fan_out: usize,
    },
    Const(f32),
}

/// A parameter of a layer table: name, shape, initialisation, learned or buffer.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub trainable: bool,
}

/// Convolution (no bias) + batch norm + optional PReLU (+ a residual input,
/// for a block's last layer): every layer of MobileFaceNet.
#[derive(Clone, Debug)]
pub struct ConvBn {
    pub name: String,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub prelu: bool,
}

pub struct ConvBnCache<T> {
    x: T,
    conv: Conv2d,
    conv_out: T,
    bn: BatchNorm,
    bn_saved: BnSaved<T>,
    prelu: bool,
}

impl ConvBn {
    pub fn conv(&self, n: usize, hw: (usize, usize)) -> Conv2d {
        Conv2d { groups: self.groups, ..Conv2d::new(n, self.cin, hw, self.cout, self.k, self.stride, self.pad) }
    }

    fn key(&self, what: &str) -> String {
        format!("{}.{what}", self.name)
    }

    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let fan_in = self.cin / self.groups * self.k * self.k;
        let spec =
            |what: &str, shape: Vec<usize>, init, trainable| ParamSpec { name: self.key(what), shape, init, trainable };
        let mut v = vec![
            spec(
                "conv.weight",
                vec![self.cout, self.cin / self.groups, self.k, self.k],
                Init::DefaultUniform { fan_in },
                true,
            ),
            spec("bn.weight", vec![self.cout], Init::Const(1.0), true),
            spec("bn.bias", vec![self.cout], Init::Const(0.0), true),
            spec("bn.running_mean", vec![self.cout], Init::Const(0.0), false),
            spec("bn.running_var", vec![self.cout], Init::Const(1.0), false),
        ];
        if self.prelu {
            v.push(spec("act.weight", vec![self.cout], Init::Const(0.25), true));
        }
        v
    }

    fn bn_params<T: Clone>(&self, p: &ParamStore<T>) -> BnParams<T> {
        BnParams {
            gamma: p.get(&self.key("bn.weight")).clone(),
            beta: p.get(&self.key("bn.bias")).clone(),
            running_mean: p.get(&self.key("bn.running_mean")).clone(),
            running_var: p.get(&self.key("bn.running_var")).clone(),
        }
    }

    pub fn forward<B: Backend>(
        &self,
        b: &mut B,
        p: &ParamStore<B::T>,
        x: &B::T,
        skip: Option<&B::T>,
        train: bool,
    ) -> Result<(B::T, ConvBnCache<B::T>)> {
        let s = b.shape(x).to_vec();
        let conv = self.conv(s[0], (s[2], s[3]));
        let conv_out = b.conv2d(&conv, x, p.get(&self.key("conv.weight")), None)?;
        let (ho, wo) = conv.out_hw();
        let bn = BatchNorm { n: s[0], c: self.cout, m: ho * wo };
        let slope = self.prelu.then(|| p.get(&self.key("act.weight")));
        let (y, bn_saved) = b.bn_act(&bn, &self.bn_params(p), &conv_out, slope, skip, train)?;
        Ok((y, ConvBnCache { x: x.clone(), conv, conv_out, bn, bn_saved, prelu: self.prelu }))
    }

    /// This layer's folded (weight, bias); see `Folded`.
    pub async fn fold<B: Backend>(&self, b: &mut B, p: &ParamStore<B::T>) -> Result<(B::T, B::T)> {
        let w_t = p.get(&self.key("conv.weight"));
        let shape = b.shape(w_t).to_vec();
        let w = b.download_async(w_t).await;
        let mut bn = Vec::new();
        for k in ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"] {
            bn.push(b.download_async(p.get(&self.key(k))).await);
        }
        let [gamma, beta, mean, var] = [&bn[0], &bn[1], &bn[2], &bn[3]];
        let scale: Vec<f32> =
            (0..self.cout).map(|c| (gamma[c] as f64 / (var[c] as f64 + EPS as f64).sqrt()) as f32).collect();
        let per_out = w.len() / self.cout;
        let folded_w: Vec<f32> = w.iter().enumerate().map(|(i, v)| v * scale[i / per_out]).collect();
        let bias: Vec<f32> = (0..self.cout).map(|c| beta[c] - mean[c] * scale[c]).collect();
        Ok((b.upload(&folded_w, &shape)?, b.upload(&bias, &[self.cout])?))
    }

    /// Eval mode through the folded convolution: conv + bias, PReLU, + skip.
    fn forward_folded<B: Backend>(
        &self,
        b: &mut B,
        p: &ParamStore<B::T>,
        x: &B::T,
        skip: Option<&B::T>,
        (w, bias): &(B::T, B::T),
    ) -> Result<B::T> {
        let s = b.shape(x).to_vec();
        let conv = Conv2d { bias: true, ..self.conv(s[0], (s[2], s[3])) };
        let mut y = b.conv2d(&conv, x, w, Some(bias))?;
        if self.prelu {
            y = b.prelu(&y, p.get(&self.key("act.weight")))?;
        }
        if let Some(k) = skip {
            y = b.add(&y, k)?;
        }
        Ok(y)
    }

    /// The parameters' gradients, and the input's unless `input_grad` is
    /// false (the network's first layer, whose input is the image).
    pub fn backward<B: Backend>(
        &self,
        b: &mut B,
        p: &mut ParamStore<B::T>,
        c: &ConvBnCache<B::T>,
        dy: &B::T,
        input_grad: bool,
    ) -> Result<Option<B::T>> {
        let slope = c.prelu.then(|| p.get(&self.key("act.weight")).clone());
        let (dx, dg, dbeta, ds) =
            b.bn_act_backward(&c.bn, &self.bn_params(p), &c.conv_out, &c.bn_saved, slope.as_ref(), dy)?;
        if let Some(ds) = ds {
            p.add_grad(b, &self.key("act.weight"), ds)?;
        }
        p.add_grad(b, &self.key("bn.weight"), dg)?;
        p.add_grad(b, &self.key("bn.bias"), dbeta)?;
        let w = p.get(&self.key("conv.weight"));
        if !input_grad {
            let (dw, _) = b.conv2d_backward_params(&c.conv, &c.x, w, &dx)?;
            p.add_grad(b, &self.key("conv.weight"), dw)?;
            return Ok(None);
        }
        let g = b.conv2d_backward(&c.conv, &c.x, w, &dx)?;
        p.add_grad(b, &self.key("conv.weight"), g.dw)?;
        Ok(Some(g.dx))
    }
}

/// A sequence of ConvBn layers, with a residual connection around it when
/// its input and output shapes agree (MobileNetV2 bottleneck, stride 1).
#[derive(Clone, Debug)]
pub struct Block {
    pub layers: Vec<ConvBn>,
    pub residual: bool,
}

impl Block {
    pub fn forward<B: Backend>(
        &self,
        b: &mut B,
        p: &ParamStore<B::T>,
        x: &B::T,
        train: bool,
        folded: Option<&Folded<B::T>>,
    ) -> Result<(B::T, Vec<ConvBnCache<B::T>>)> {
        let mut caches = Vec::with_capacity(self.layers.len());
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            // The residual add rides on the last layer's normalisation.
            let skip = (self.residual && i + 1 == self.layers.len()).then_some(x);
            match folded.filter(|_| !train).and_then(|f| f.get(&l.name)) {
                Some(f) => h = l.forward_folded(b, p, &h, skip, f)?,
                None => {
                    let (y, c) = l.forward(b, p, &h, skip, train)?;
                    caches.push(c);
                    h = y;
                }
            }
        }
        Ok((h, caches))
    }

    /// The parameters' gradients, and the block input's unless
    /// `input_grad` is false (the first block, whose input is the image).
    pub fn backward<B: Backend>(
        &self,
        b: &mut B,
        p: &mut ParamStore<B::T>,
        caches: &[ConvBnCache<B::T>],
        dy: &B::T,
        input_grad: bool,
    ) -> Result<Option<B::T>> {
        let mut d = dy.clone();
        for (i, (l, c)) in self.layers.iter().zip(caches).enumerate().rev() {
            match l.backward(b, p, c, &d, input_grad || i > 0)? {
                Some(next) => d = next,
                None => return Ok(None),
            }
        }
        if self.residual {
            // The input fed both the layers and the skip connection.
            b.accumulate(&d, dy)?;
        }
        Ok(Some(d))
    }
}
