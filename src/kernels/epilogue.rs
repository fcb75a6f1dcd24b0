//! Epilogues: what a convolution or matrix product does to each output as
//! it writes it, after its bias: an activation (PReLU, ReLU, ReLU6), then
//! `+ skip`. Inference runs a layer, its activation and a residual add as
//! one dispatch this way instead of three, and never writes or reads the
//! values between them. No kernel of its own: `shaders/common.wgsl`
//! (`epilogue_act`) and the stores of `shaders/conv2d.wgsl` and
//! `shaders/linear.wgsl`; the reference is the separate ops
//! (`epilogue_ref`), and the convolution and linear checks compare every
//! path's epilogue with it.

use super::activation::{act_ref, prelu_ref, Act};
use super::check::{compare_f32, widen, CheckRow, Rng, Tol};
use super::upload;
use crate::gpu::{Gpu, Recorder, Tensor};
use anyhow::Result;

/// The activation of an epilogue; PReLU's slopes are one per output channel.
#[derive(Clone, Copy, Debug)]
pub enum OutAct<'a, T> {
    Prelu(&'a T),
    Fixed(Act),
}

/// An activation, then `+ skip` (a tensor shaped as the output).
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a, T> {
    pub act: Option<OutAct<'a, T>>,
    pub skip: Option<&'a T>,
}

impl<T> Epilogue<'_, T> {
    /// Outputs stored as computed.
    pub fn none() -> Self {
        Epilogue { act: None, skip: None }
    }

    /// The shaders' `act` parameter (common.wgsl: `epilogue_act`).
    pub fn act_code(&self) -> usize {
        match self.act {
            None => 0,
            Some(OutAct::Prelu(_)) => 1,
            Some(OutAct::Fixed(Act::Relu)) => 2,
            Some(OutAct::Fixed(Act::Relu6)) => 3,
        }
    }

    /// PReLU's slopes, where the activation has them.
    pub fn slope(&self) -> Option<&T> {
        match self.act {
            Some(OutAct::Prelu(s)) => Some(s),
            _ => None,
        }
    }
}

/// The reference: `y` viewed as (n, c, m) through the activation, then `+ skip`.
pub fn epilogue_ref(y: &[f64], c: usize, m: usize, e: &Epilogue<Vec<f64>>) -> Vec<f64> {
    let y = match e.act {
        None => y.to_vec(),
        Some(OutAct::Prelu(slope)) => prelu_ref(y, slope, c, m),
        Some(OutAct::Fixed(act)) => act_ref(act, y),
    };
    match e.skip {
        Some(s) => y.iter().zip(s).map(|(a, b)| a + b).collect(),
        None => y,
    }
}

/// The check rows of a layer's epilogues: `run` records the layer with an
/// epilogue (PReLU then a skip; ReLU6 alone), compared with `y_ref` (the
/// layer's reference output, viewed as (n, c, m)) through `epilogue_ref`.
pub(crate) fn check_rows(
    gpu: &Gpu,
    rng: &mut Rng,
    (name, shape): (&str, &str),
    y_ref: &[f64],
    (c, m): (usize, usize),
    run: &dyn Fn(&mut Recorder, &Epilogue<Tensor>) -> Result<Tensor>,
) -> Result<Vec<CheckRow>> {
    let out_shape = [y_ref.len() / (c * m), c, m];
    let slope = rng.uniform(c, -0.5, 0.5);
    let skip = rng.uniform(y_ref.len(), -1.0, 1.0);
    let (slope_t, skip_t) = (upload(gpu, &slope, &[c])?, upload(gpu, &skip, &out_shape)?);
    let (slope_r, skip_r) = (widen(&slope), widen(&skip));
    let cases = [
        ("forward + prelu + skip", Epilogue { act: Some(OutAct::Prelu(&slope_t)), skip: Some(&skip_t) }, {
            Epilogue { act: Some(OutAct::Prelu(&slope_r)), skip: Some(&skip_r) }
        }),
        ("forward + relu6", Epilogue { act: Some(OutAct::Fixed(Act::Relu6)), skip: None }, {
            Epilogue { act: Some(OutAct::Fixed(Act::Relu6)), skip: None }
        }),
    ];
    let mut rows = Vec::new();
    for (direction, e, e_ref) in cases {
        let mut rec = Recorder::new(gpu);
        let y = run(&mut rec, &e)?;
        rec.submit();
        let want = epilogue_ref(y_ref, c, m, &e_ref);
        rows.push(compare_f32(name, direction, shape, &y.to_vec(gpu), &want, Tol::FORWARD));
    }
    Ok(rows)
}
