//! Per-channel sums, the bias gradient of conv and linear layers, and the
//! second pass of split reductions (`shaders/reduce.wgsl`). Checked through
//! those layers' bias and weight gradients.

use super::{reduction, reduction_launch};
use crate::gpu::{Kernel, Launch, Params, Recorder, Shader, Tensor};
use anyhow::{bail, Result};

const CHANNEL_SUM: Kernel = Kernel::new(Shader::Reduce, "channel_sum", 256);
const SUM_SLICES: Kernel = Kernel::new(Shader::Reduce, "sum_slices", 64);

/// out[c] = sum over n and m of x viewed as (n, c, m).
pub fn channel_sum(rec: &mut Recorder, x: &Tensor, n: usize, c: usize, m: usize) -> Result<Tensor> {
    let out = Tensor::zeros(rec.gpu(), &[c])?;
    let params = Params::new().u("n", n).u("c", c).u("m", m);
    let k = reduction(rec, CHANNEL_SUM);
    rec.dispatch(k, &params, &[(1, Some(x)), (2, Some(&out))], reduction_launch(k, c, n * m, 1))?;
    Ok(out)
}

/// out[i] = sum over s of parts[s, i], in slice order: the second pass of a
/// reduction that `Split` cut into `parts.shape[0]` slices.
pub fn sum_slices(rec: &mut Recorder, parts: &Tensor, out: &Tensor) -> Result<()> {
    let slices = parts.shape[0];
    let count = out.numel();
    if parts.numel() != slices * count {
        bail!("sum_slices: partials {:?} do not hold {slices} slices of {:?}", parts.shape, out.shape);
    }
    let params = Params::new().u("n", slices).u("c", count).u("m", 1);
    rec.dispatch(
        SUM_SLICES,
        &params,
        &[(1, Some(parts)), (2, Some(out))],
        Launch::threads(count, SUM_SLICES.wg, slices),
    )
}

/// CPU reference of `channel_sum`.
pub fn channel_sum_ref(x: &[f64], n: usize, c: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; c];
    for b in 0..n {
        for (ch, o) in out.iter_mut().enumerate() {
            *o += x[(b * c + ch) * m..(b * c + ch + 1) * m].iter().sum::<f64>();
        }
    }
    out
}
