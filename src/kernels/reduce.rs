//! Per-channel sums, the bias gradient of conv and linear layers
//! (`shaders/reduce.wgsl`). Checked through those layers' bias gradients.

use crate::gpu::{Kernel, Params, Recorder, Shader, Tensor};
use anyhow::Result;

const CHANNEL_SUM: Kernel = Kernel::new(Shader::Reduce, "channel_sum", 256);

/// out[c] = sum over n and m of x viewed as (n, c, m).
pub fn channel_sum(rec: &mut Recorder, x: &Tensor, n: usize, c: usize, m: usize) -> Result<Tensor> {
    let out = Tensor::zeros(rec.gpu(), &[c])?;
    let params = Params::new().u("n", n).u("c", c).u("m", m);
    rec.dispatch(CHANNEL_SUM, &params, &[(1, Some(x)), (2, Some(&out))], c as u64)?;
    Ok(out)
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
