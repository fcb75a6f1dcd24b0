//! Convolution checks (every GPU path against the reference, the reference
//! against finite differences) and benchmark cases.

use super::{backward, backward_params, backward_ref, forward, forward_ref, forward_with, Conv2d, Path};
use crate::gpu::{BenchCase, Gpu, Recorder, Tensor};
use crate::kernels::check::{compare_f32, finite_diff, widen, CheckRow, Rng, Tol};
use crate::kernels::epilogue::{self, Epilogue};
use crate::kernels::upload;
use anyhow::Result;

/// Fixed shapes cover every kernel size and stride the issue names, odd and
/// prime sizes and thread counts that are not multiples of the workgroup;
/// one more shape is drawn from the seed.
fn shapes(rng: &mut Rng) -> Vec<Conv2d> {
    let c = |n, cin, h, w, cout, k, stride, pad, groups, bias| Conv2d {
        n,
        cin,
        h,
        w,
        cout,
        kh: k,
        kw: k,
        stride,
        pad,
        groups,
        bias,
    };
    vec![
        c(2, 3, 13, 11, 5, 3, 2, 1, 1, true),
        c(1, 4, 7, 7, 6, 7, 1, 3, 1, false),
        c(3, 5, 9, 10, 7, 2, 2, 0, 1, true),
        c(2, 6, 5, 7, 4, 3, 1, 2, 2, false),
        c(2, 7, 6, 5, 11, 1, 1, 0, 1, true),
        c(2, 3, 17, 13, 8, 3, 2, 0, 1, false),
        // MobileFaceNet's stem at full size: long per-invocation reductions
        // (a blocked weight-gradient kernel once failed only at this size)
        c(2, 3, 112, 112, 8, 3, 2, 1, 1, false),
        // channels in fours: the blocked kernels in every direction
        c(2, 8, 9, 7, 12, 3, 1, 1, 1, true),
        c(1, 8, 11, 10, 8, 3, 2, 1, 2, false),
        c(3, 4, 6, 5, 4, 2, 2, 0, 1, false),
        // 3x3 stride 1 unpadded (MTCNN's): the window kernel, at a partial
        // block of 16 channels and rows not a multiple of 8 outputs, and at
        // two blocks of channels
        c(2, 3, 12, 21, 10, 3, 1, 0, 1, true),
        c(1, 16, 11, 13, 20, 3, 1, 0, 1, false),
        // 1x1 with 64+ channels: the GPU set's tiled product, its weight
        // gradient summed over the batch in slices
        c(3, 64, 12, 15, 70, 1, 1, 0, 1, true),
        c(
            rng.range(1, 3),
            rng.range(1, 6),
            rng.range(5, 17),
            rng.range(5, 17),
            rng.range(1, 9),
            3,
            rng.range(1, 2),
            rng.range(0, 2),
            1,
            true,
        ),
    ]
}

/// Runs forward and backward of one shape on the GPU and against the
/// reference; shared with the depthwise family.
pub fn check_shape(gpu: &Gpu, rng: &mut Rng, name: &str, s: &Conv2d, path: Path) -> Result<Vec<CheckRow>> {
    let [co, cig, kh, kw] = s.weight_shape();
    let xs = rng.uniform(s.n * s.cin * s.h * s.w, -1.0, 1.0);
    let ws = rng.uniform(co * cig * kh * kw, -0.5, 0.5);
    let bs = rng.uniform(s.cout, -0.5, 0.5);
    let dys = rng.uniform(s.output_shape().iter().product(), -1.0, 1.0);
    let x = upload(gpu, &xs, &[s.n, s.cin, s.h, s.w])?;
    let w = upload(gpu, &ws, &s.weight_shape())?;
    let b = upload(gpu, &bs, &[s.cout])?;
    let dy = upload(gpu, &dys, &s.output_shape())?;
    let mut rec = Recorder::new(gpu);
    let y = forward(&mut rec, s, path, &x, &w, s.bias.then_some(&b))?;
    let g = backward(&mut rec, s, path, &x, &w, &dy)?;
    rec.submit();
    let (xr, wr, br) = (widen(&xs), widen(&ws), widen(&bs));
    let yr = forward_ref(s, &xr, &wr, s.bias.then_some(&br[..]));
    let gr = backward_ref(s, &xr, &wr, &widen(&dys));
    let tag = match path {
        Path::Gemm => " [gemm]",
        Path::Blocked => " [blocked]",
        Path::Im2col => " [im2col]",
        Path::Window => " [window]",
        _ => "",
    };
    let shape = format!("{}{tag}", s.describe());
    let mut rows = vec![
        compare_f32(name, "forward", &shape, &y.to_vec(gpu), &yr, Tol::FORWARD),
        compare_f32(name, "backward input", &shape, &g.dx.to_vec(gpu), &gr.dx, Tol::BACKWARD),
        compare_f32(name, "backward weight", &shape, &g.dw.to_vec(gpu), &gr.dw, Tol::BACKWARD),
    ];
    if let (Some(db), Some(dbr)) = (&g.db, &gr.db) {
        rows.push(compare_f32(name, "backward bias", &shape, &db.to_vec(gpu), dbr, Tol::BACKWARD));
    }
    let (ho, wo) = s.out_hw();
    let run = |rec: &mut Recorder, e: &Epilogue<Tensor>| forward_with(rec, s, path, &x, &w, s.bias.then_some(&b), e);
    rows.extend(epilogue::check_rows(gpu, rng, (name, &shape), &yr, (s.cout, ho * wo), &run)?);
    Ok(rows)
}

pub(super) fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for s in shapes(rng) {
        rows.extend(check_shape(gpu, rng, "conv2d", &s, Path::Direct)?);
        rows.extend(check_shape(gpu, rng, "conv2d", &s, Path::Blocked)?);
        if s.gemm_applies() {
            rows.extend(check_shape(gpu, rng, "conv2d", &s, Path::Gemm)?);
        }
        if s.im2col_chunk(gpu).is_some() {
            rows.extend(check_shape(gpu, rng, "conv2d", &s, Path::Im2col)?);
        }
        if s.window_applies(gpu) {
            rows.extend(check_shape(gpu, rng, "conv2d", &s, Path::Window)?);
        }
    }
    Ok(rows)
}

/// Finite-difference check of `backward_ref` for one shape (shared with depthwise).
pub(crate) fn refcheck_shape(rng: &mut Rng, name: &str, s: &Conv2d) -> Vec<CheckRow> {
    let x = widen(&rng.uniform(s.n * s.cin * s.h * s.w, -1.0, 1.0));
    let w = widen(&rng.uniform(s.weight_shape().iter().product(), -1.0, 1.0));
    let b = widen(&rng.uniform(s.cout, -1.0, 1.0));
    let dy = widen(&rng.uniform(s.output_shape().iter().product(), -1.0, 1.0));
    let s = *s;
    let fwd = move |v: &[Vec<f64>]| forward_ref(&s, &v[0], &v[1], s.bias.then_some(&v[2][..]));
    let bwd = move |v: &[Vec<f64>], dy: &[f64]| {
        let g = backward_ref(&s, &v[0], &v[1], dy);
        vec![g.dx, g.dw, g.db.unwrap_or_default()]
    };
    let names = ["x", "w", if s.bias { "b" } else { "" }];
    finite_diff(name, &s.describe(), &names, &[x, w, b], &dy, &fwd, &bwd, rng)
}

pub(super) fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    shapes(rng).iter().flat_map(|s| refcheck_shape(rng, "conv2d", s)).collect()
}

// -------------------------------------------------------------------- bench

/// Benchmark cases for one convolution shape (shared with depthwise).
pub(crate) fn bench_shape(gpu: &Gpu, label: &str, s: Conv2d) -> Result<Vec<BenchCase>> {
    let x = Tensor::zeros(gpu, &[s.n, s.cin, s.h, s.w])?;
    let w = Tensor::zeros(gpu, &s.weight_shape())?;
    let b = Tensor::zeros(gpu, &[s.cout])?;
    let dy = Tensor::zeros(gpu, &s.output_shape())?;
    let io = 4.0 * (x.numel() + w.numel() + dy.numel()) as f64;
    let flops = 2.0 * s.macs();
    let shape = s.describe();
    let (x2, w2) = (x.clone(), w.clone());
    Ok(vec![
        BenchCase::new(label, "forward", &shape, flops, io, move |rec| {
            forward(rec, &s, Path::Auto, &x, &w, s.bias.then_some(&b)).map(drop)
        }),
        BenchCase::new(label, "backward", &shape, 2.0 * flops, 2.0 * io, move |rec| {
            backward(rec, &s, Path::Auto, &x2, &w2, &dy).map(drop)
        }),
    ])
}

/// A network's first convolution: its backward is the weight (and bias)
/// gradient alone, as the input is the image.
fn bench_stem(gpu: &Gpu, label: &str, s: Conv2d) -> Result<Vec<BenchCase>> {
    let mut cases = bench_shape(gpu, label, s)?;
    let x = Tensor::zeros(gpu, &[s.n, s.cin, s.h, s.w])?;
    let dy = Tensor::zeros(gpu, &s.output_shape())?;
    let io = 4.0 * (x.numel() + dy.numel() + s.weight_shape().iter().product::<usize>()) as f64;
    let flops = 2.0 * s.macs();
    cases.push(BenchCase::new(label, "backward weight", &s.describe(), flops, io, move |rec| {
        backward_params(rec, &s, Path::Auto, &x, &dy).map(drop)
    }));
    Ok(cases)
}

pub(super) fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let mut cases = Vec::new();
    // MobileFaceNet: the stem, an expansion 1x1 and the 1x1 to 512.
    cases.extend(bench_stem(gpu, "conv2d", Conv2d::new(batch, 3, (112, 112), 64, 3, 2, 1))?);
    cases.extend(bench_shape(gpu, "conv2d 1x1", Conv2d::new(batch, 64, (28, 28), 128, 1, 1, 0))?);
    cases.extend(bench_shape(gpu, "conv2d 1x1", Conv2d::new(batch, 128, (7, 7), 512, 1, 1, 0))?);
    // MiniNetwork's first two convolutions at 112x112 (the third exceeds a
    // 128 MiB binding at batch 32; the models issue splits the batch).
    let mini = |cin, cout| Conv2d { bias: true, ..Conv2d::new(batch, cin, (112, 112), cout, 3, 1, 1) };
    cases.extend(bench_stem(gpu, "conv2d", mini(3, 32))?);
    cases.extend(bench_shape(gpu, "conv2d", mini(32, 64))?);
    Ok(cases)
}
