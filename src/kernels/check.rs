//! Comparing GPU results with CPU references, and CPU references with finite
//! differences. Used by `arcface gradcheck` and by the test suite alike, so
//! the CLI and the tests check exactly the same things.

use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::cell::Cell;

thread_local! {
    static HALF: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (a family's checks) on the kernels' f16 variants: data drawn in
/// it is rounded to f16, `kernels::upload` stores it as f16 (so every output
/// that follows its input's precision is f16 too), and GPU results are
/// compared at `Tol::half`. The references see the same rounded inputs.
pub fn in_half<R>(f: impl FnOnce() -> R) -> R {
    let was = HALF.with(|h| h.replace(true));
    let out = f();
    HALF.with(|h| h.set(was));
    out
}

/// Whether checks run on the f16 variants now (`in_half`).
pub fn checking_half() -> bool {
    HALF.with(Cell::get)
}

/// `v` as the checks store it: rounded to f16 within `in_half` (data made
/// from drawn values, so the reference sees what the GPU holds).
pub fn stored(v: f32) -> f32 {
    if checking_half() {
        half::f16::from_f32(v).to_f32()
    } else {
        v
    }
}

/// |gpu - ref| <= atol + rtol * |ref|, element by element.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

impl Tol {
    /// GPU forward against the f64 reference.
    pub const FORWARD: Tol = Tol { atol: 1e-5, rtol: 1e-4 };
    /// GPU gradients against the f64 reference: longer f32 reductions.
    pub const BACKWARD: Tol = Tol { atol: 1e-4, rtol: 1e-3 };
    /// The f64 reference's analytic gradient against central differences.
    pub const FINITE_DIFF: Tol = Tol { atol: 1e-6, rtol: 1e-5 };

    /// The same comparison where results are stored in f16: its rounding
    /// (2^-11 relative) on top of the f32 bound.
    pub fn half(self) -> Tol {
        Tol { atol: self.atol.max(HALF_ATOL), rtol: self.rtol.max(HALF_RTOL) }
    }
}

/// `Tol::half`'s floors.
const HALF_ATOL: f64 = 1e-3;
const HALF_RTOL: f64 = 2e-3;

/// One line of the gradcheck table.
#[derive(Clone, Debug, Serialize)]
pub struct CheckRow {
    pub kernel: String,
    pub direction: String,
    pub shape: String,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    pub tol: Tol,
    pub pass: bool,
    /// The first mismatching elements, for a quick look at what went wrong.
    pub mismatches: Vec<String>,
}

pub fn compare(kernel: &str, direction: &str, shape: &str, got: &[f64], want: &[f64], tol: Tol) -> CheckRow {
    let mut row = CheckRow {
        kernel: kernel.into(),
        direction: direction.into(),
        shape: shape.into(),
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        tol,
        pass: got.len() == want.len(),
        mismatches: Vec::new(),
    };
    if !row.pass {
        row.mismatches.push(format!("length {} != reference length {}", got.len(), want.len()));
        return row;
    }
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        let err = (g - r).abs();
        // NaN never passes: `err <= bound` is false for NaN.
        let ok = err <= tol.atol + tol.rtol * r.abs();
        row.max_abs_err = row.max_abs_err.max(if err.is_nan() { f64::INFINITY } else { err });
        row.max_rel_err = row.max_rel_err.max(err / r.abs().max(tol.atol));
        if !ok {
            row.pass = false;
            if row.mismatches.len() < 5 {
                row.mismatches.push(format!("[{i}] got {g:.7e}, want {r:.7e}"));
            }
        }
    }
    row
}

/// Compares f32 GPU output with an f64 reference (at `Tol::half` within
/// `in_half`).
pub fn compare_f32(kernel: &str, direction: &str, shape: &str, got: &[f32], want: &[f64], tol: Tol) -> CheckRow {
    let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
    let tol = if checking_half() { tol.half() } else { tol };
    compare(kernel, direction, shape, &got, want, tol)
}

/// Checks a reference backward against central differences of
/// L(inputs) = sum(dy * forward(inputs)), at up to `probes` positions of each
/// checked input. `backward` returns one gradient per input (same order);
/// `names[i]` labels input i, and inputs named "" are not checked (labels,
/// saved statistics).
pub fn finite_diff(
    kernel: &str,
    shape: &str,
    names: &[&str],
    inputs: &[Vec<f64>],
    dy: &[f64],
    forward: &dyn Fn(&[Vec<f64>]) -> Vec<f64>,
    backward: &dyn Fn(&[Vec<f64>], &[f64]) -> Vec<Vec<f64>>,
    rng: &mut Rng,
) -> Vec<CheckRow> {
    let analytic = backward(inputs, dy);
    let loss = |xs: &[Vec<f64>]| -> f64 { forward(xs).iter().zip(dy).map(|(y, d)| y * d).sum() };
    let h = 1e-6;
    let probes = 24;
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            continue;
        }
        let n = inputs[i].len();
        let picks: Vec<usize> =
            if n <= probes { (0..n).collect() } else { (0..probes).map(|_| rng.index(n)).collect() };
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for &j in &picks {
            let mut xs = inputs.to_vec();
            xs[i][j] += h;
            let up = loss(&xs);
            xs[i][j] -= 2.0 * h;
            let down = loss(&xs);
            want.push((up - down) / (2.0 * h));
            got.push(analytic[i][j]);
        }
        rows.push(compare(kernel, &format!("ref d{name} vs finite diff"), shape, &got, &want, Tol::FINITE_DIFF));
    }
    rows
}

/// Seeded random inputs. Values are drawn as f32 (rounded to f16 within
/// `in_half`) and widened, so the GPU and the reference (f64) see exactly
/// the same numbers.
pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }
    pub fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| stored(self.0.random_range(lo..hi))).collect()
    }
    /// Uniform values kept at least `gap` away from each point in `kinks`, so
    /// that finite differences do not straddle a non-differentiable point.
    pub fn away_from(&mut self, n: usize, lo: f32, hi: f32, kinks: &[f32], gap: f32) -> Vec<f32> {
        (0..n)
            .map(|_| loop {
                let v = stored(self.0.random_range(lo..hi));
                if kinks.iter().all(|k| (v - k).abs() > gap) {
                    break v;
                }
            })
            .collect()
    }
    pub fn index(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }
    pub fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        self.0.random_range(lo..=hi_inclusive)
    }
}

pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
