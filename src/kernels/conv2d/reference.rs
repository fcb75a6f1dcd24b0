//! The f64 reference of 2-D convolution: forward and the three gradients.

use super::{Conv2d, Grads};

/// Visits every multiply of the convolution once, in the plain loop order:
/// `f(y_index, x_index, w_index)`. Taps in the padding are
/// skipped. Forward and backward references are both written on it.
fn for_each_tap(s: &Conv2d, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = s.out_hw();
    let (cin_g, cout_g) = (s.cin / s.groups, s.cout / s.groups);
    for n in 0..s.n {
        for co in 0..s.cout {
            let g = co / cout_g;
            for oy in 0..ho {
                for ox in 0..wo {
                    let yi = ((n * s.cout + co) * ho + oy) * wo + ox;
                    for ci in 0..cin_g {
                        let c = g * cin_g + ci;
                        for ky in 0..s.kh {
                            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                            if iy < 0 || iy >= s.h as isize {
                                continue;
                            }
                            for kx in 0..s.kw {
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                if ix < 0 || ix >= s.w as isize {
                                    continue;
                                }
                                let xi = ((n * s.cin + c) * s.h + iy as usize) * s.w + ix as usize;
                                f(yi, xi, ((co * cin_g + ci) * s.kh + ky) * s.kw + kx);
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn forward_ref(s: &Conv2d, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let [n, c, ho, wo] = s.output_shape();
    let mut y: Vec<f64> = (0..n * c * ho * wo).map(|i| b.map_or(0.0, |b| b[(i / (ho * wo)) % c])).collect();
    for_each_tap(s, |yi, xi, wi| y[yi] += x[xi] * w[wi]);
    y
}

/// Scatter form (the transpose of the forward loops): an independent
/// formulation from the GPU's gather kernels.
pub fn backward_ref(s: &Conv2d, x: &[f64], w: &[f64], dy: &[f64]) -> Grads<Vec<f64>> {
    let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
    for_each_tap(s, |yi, xi, wi| {
        dx[xi] += dy[yi] * w[wi];
        dw[wi] += dy[yi] * x[xi];
    });
    let [n, c, ho, wo] = s.output_shape();
    let db =
        (0..c).map(|co| (0..n).map(|b| dy[(b * c + co) * ho * wo..][..ho * wo].iter().sum::<f64>()).sum()).collect();
    Grads { dx, dw, db: s.bias.then_some(db) }
}
