//! Area resampling of rectangles of one image (PyTorch's
//! `interpolate(mode="area")`, i.e. adaptive average pooling), then an affine
//! map of the values: MTCNN's pyramid levels (the whole photo, one band of
//! output rows at a time) and its R-Net and O-Net crops (many boxes, one
//! dispatch) are both this op, so the photo is uploaded once and nothing is
//! resampled on the host. Output row i of a rectangle `len` rows tall
//! resized to `out` rows averages its rows floor(i*len/out) ..
//! ceil((i+1)*len/out), and the same for columns. Forward only: nothing
//! trains through it.

use super::{upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, Launch, Params, Recorder, Shader, Tensor};
use crate::kernels::check::{compare, compare_f32, widen, CheckRow, Rng, Tol};
use anyhow::{bail, Result};

/// A rectangle of the image: rows `y0..y1`, columns `x0..x1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub y0: usize,
    pub y1: usize,
    pub x0: usize,
    pub x1: usize,
}

impl Rect {
    pub fn whole(h: usize, w: usize) -> Rect {
        Rect { y0: 0, y1: h, x0: 0, x1: w }
    }
}

/// Every rectangle of an image (c, h, w) resized to `out_h` x `out_w`, of
/// which output rows `rows.0..rows.1` are computed (a band of a pyramid
/// level; `0..out_h` for whole crops), each value `(mean + offset) * scale`.
#[derive(Clone, Copy, Debug)]
pub struct AreaResize {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub rows: (usize, usize),
    pub offset: f32,
    pub scale: f32,
}

/// Adaptive-pooling windows [start, end) of `out` cells over `len` inputs.
pub fn windows(len: usize, out: usize) -> Vec<(usize, usize)> {
    (0..out).map(|i| ((i * len) / out, ((i + 1) * len).div_ceil(out))).collect()
}

impl AreaResize {
    /// Output shape for `n` rectangles: (n, c, band rows, out_w).
    pub fn out_shape(&self, n: usize) -> [usize; 4] {
        [n, self.c, self.rows.1 - self.rows.0, self.out_w]
    }

    pub fn describe(&self, n: usize) -> String {
        format!(
            "{n} rects of c{} {}x{} -> {}x{} rows {}..{}",
            self.c, self.h, self.w, self.out_h, self.out_w, self.rows.0, self.rows.1
        )
    }

    pub fn validate(&self, rects: &[Rect]) -> Result<()> {
        if self.out_h == 0 || self.out_w == 0 || self.rows.0 >= self.rows.1 || self.rows.1 > self.out_h {
            bail!("area resize {}: needs a non-empty output and rows within it", self.describe(rects.len()));
        }
        for r in rects {
            if r.y0 >= r.y1 || r.x0 >= r.x1 || r.y1 > self.h || r.x1 > self.w {
                bail!("area resize {}: rectangle {r:?} is empty or outside the image", self.describe(rects.len()));
            }
        }
        Ok(())
    }

    /// The most pixels one output averages over `rects` (one loop
    /// iteration each, plus one per window row).
    fn longest_window(&self, rects: &[Rect]) -> usize {
        let span = |len: usize, out: usize| len.div_ceil(out) + 1;
        rects.iter().map(|r| span(r.y1 - r.y0, self.out_h) * (span(r.x1 - r.x0, self.out_w) + 1)).max().unwrap_or(0)
    }

    fn params(&self, n: usize, chunks: usize) -> Params {
        Params::new()
            .u("n", n)
            .u("c", self.c)
            .u("h", self.h)
            .u("w", self.w)
            .u("out_h", self.out_h)
            .u("out_w", self.out_w)
            .u("row0", self.rows.0)
            .u("rows", self.rows.1 - self.rows.0)
            .u("chunks", chunks)
            .f("offset", self.offset)
            .f("scale", self.scale)
    }

    /// The kernel's table: per rectangle, the input rows of each band row,
    /// then the input columns of each output column, as [start, end) in
    /// image coordinates.
    fn window_table(&self, rects: &[Rect]) -> Vec<u32> {
        let mut t = Vec::with_capacity(rects.len() * 2 * (self.rows.1 - self.rows.0 + self.out_w));
        for r in rects {
            let rows = &windows(r.y1 - r.y0, self.out_h)[self.rows.0..self.rows.1];
            t.extend(rows.iter().flat_map(|&(a, b)| [r.y0 + a, r.y0 + b]).map(|v| v as u32));
            let cols = windows(r.x1 - r.x0, self.out_w);
            t.extend(cols.iter().flat_map(|&(a, b)| [r.x0 + a, r.x0 + b]).map(|v| v as u32));
        }
        t
    }
}

// ---------------------------------------------------------------- reference

/// Each output the plain sum over its window divided by the window's size.
pub fn forward_ref(s: &AreaResize, img: &[f64], rects: &[Rect]) -> Vec<f64> {
    let mut y = Vec::with_capacity(rects.len() * s.c * (s.rows.1 - s.rows.0) * s.out_w);
    for r in rects {
        let (rows, cols) = (windows(r.y1 - r.y0, s.out_h), windows(r.x1 - r.x0, s.out_w));
        for c in 0..s.c {
            for &(a, b) in &rows[s.rows.0..s.rows.1] {
                for &(l, m) in &cols {
                    let mut sum = 0.0;
                    for yy in r.y0 + a..r.y0 + b {
                        let row = (c * s.h + yy) * s.w + r.x0;
                        sum += img[row + l..row + m].iter().sum::<f64>();
                    }
                    y.push((sum / ((b - a) * (m - l)) as f64 + s.offset as f64) * s.scale as f64);
                }
            }
        }
    }
    y
}

/// The same outputs computed as PyTorch does: column averages of every
/// row first, then averages of those down the rows (an independent
/// formulation for `refcheck`).
fn separable_ref(s: &AreaResize, img: &[f64], rects: &[Rect]) -> Vec<f64> {
    let mut y = Vec::new();
    for r in rects {
        let (rows, cols) = (windows(r.y1 - r.y0, s.out_h), windows(r.x1 - r.x0, s.out_w));
        for c in 0..s.c {
            let means: Vec<Vec<f64>> = (r.y0..r.y1)
                .map(|yy| {
                    let row = &img[(c * s.h + yy) * s.w + r.x0..][..r.x1 - r.x0];
                    cols.iter().map(|&(l, m)| row[l..m].iter().sum::<f64>() / (m - l) as f64).collect()
                })
                .collect();
            for &(a, b) in &rows[s.rows.0..s.rows.1] {
                for j in 0..s.out_w {
                    let mean = means[a..b].iter().map(|m| m[j]).sum::<f64>() / (b - a) as f64;
                    y.push((mean + s.offset as f64) * s.scale as f64);
                }
            }
        }
    }
    y
}

// ---------------------------------------------------------------------- GPU

const FORWARD: Kernel = Kernel::new(Shader::Resample, "area_resize", 64);

/// `img` (1, c, h, w). Workgroups of 64 along wide rows, of 16 along the
/// 24- and 48-wide rows of crops (fewer idle lanes).
pub fn forward(rec: &mut Recorder, s: &AreaResize, img: &Tensor, rects: &[Rect]) -> Result<Tensor> {
    s.validate(rects)?;
    if img.numel() != s.c * s.h * s.w {
        bail!("area resize {}: the image holds {} values", s.describe(rects.len()), img.numel());
    }
    let table = s.window_table(rects);
    let table = Tensor::from_u32(rec.gpu(), &table, &[table.len()])?;
    let y = Tensor::uninit(rec.gpu(), &s.out_shape(rects.len()))?;
    let k = if s.out_w >= 64 { FORWARD } else { FORWARD.with_wg(16) };
    let chunks = s.out_w.div_ceil(k.wg as usize);
    let groups = rects.len() * s.c * (s.rows.1 - s.rows.0) * chunks;
    let launch = Launch::groups(groups, s.longest_window(rects));
    rec.dispatch(k, &s.params(rects.len(), chunks), &[(1, Some(img)), (2, Some(&table)), (3, Some(&y))], launch)?;
    Ok(y)
}

// ------------------------------------------------------------------- checks

/// Images of whole pixel values (as photos are), rectangles of every kind:
/// shrunk, enlarged (windows of one pixel repeat), the whole image, a band;
/// rows of both workgroup widths, partly filled.
fn cases(rng: &mut Rng) -> Vec<(AreaResize, Vec<Rect>)> {
    let s = |c, h, w, out_h, out_w, rows| AreaResize { c, h, w, out_h, out_w, rows, offset: -127.5, scale: 0.0078125 };
    let r = |y0, y1, x0, x1| Rect { y0, y1, x0, x1 };
    let (h, w) = (rng.range(20, 40), rng.range(20, 40));
    vec![
        (s(3, 37, 29, 24, 24, (0, 24)), vec![r(0, 37, 0, 29), r(3, 30, 5, 28), r(10, 15, 2, 9), r(0, 1, 0, 1)]),
        (s(3, 37, 29, 26, 21, (4, 19)), vec![Rect::whole(37, 29)]),
        (s(1, 9, 11, 13, 17, (0, 13)), vec![r(2, 9, 1, 11), r(0, 4, 0, 3)]),
        (s(3, 64, 48, 12, 12, (0, 12)), vec![r(0, 64, 0, 48), r(7, 60, 1, 40), r(20, 21, 30, 48)]),
        (s(2, 50, 150, 20, 70, (3, 20)), vec![Rect::whole(50, 150), r(5, 45, 10, 140)]),
        (s(3, h, w, 10, 7, (2, 10)), vec![r(1, h - 1, 2, w), r(0, h / 2, w / 3, w)]),
    ]
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for (s, rects) in cases(rng) {
        let px: Vec<f32> = rng.uniform(s.c * s.h * s.w, 0.0, 256.0).iter().map(|v| v.floor()).collect();
        let img = upload(gpu, &px, &[1, s.c, s.h, s.w])?;
        let mut rec = Recorder::new(gpu);
        let y = forward(&mut rec, &s, &img, &rects)?;
        rec.submit();
        let want = forward_ref(&s, &widen(&px), &rects);
        rows.push(compare_f32("resample", "forward", &s.describe(rects.len()), &y.to_vec(gpu), &want, Tol::FORWARD));
    }
    Ok(rows)
}

/// The reference against the separable formulation (no backward to check).
fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    cases(rng)
        .into_iter()
        .map(|(s, rects)| {
            let img = widen(&rng.uniform(s.c * s.h * s.w, 0.0, 255.0));
            let (got, want) = (forward_ref(&s, &img, &rects), separable_ref(&s, &img, &rects));
            compare("resample", "ref forward vs separable", &s.describe(rects.len()), &got, &want, Tol::FINITE_DIFF)
        })
        .collect()
}

// -------------------------------------------------------------------- bench

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let img = Tensor::zeros(gpu, &[1, 3, 1350, 1350])?;
    let case = |s: AreaResize, rects: Vec<Rect>, img: Tensor| {
        let read: usize = rects.iter().map(|r| 3 * (r.y1 - r.y0) * (r.x1 - r.x0)).sum();
        let written = rects.len() * 3 * (s.rows.1 - s.rows.0) * s.out_w;
        let bytes = 4.0 * (read + written) as f64;
        BenchCase::new("resample", "forward", &s.describe(rects.len()), read as f64, bytes, move |rec| {
            forward(rec, &s, &img, &rects).map(drop)
        })
    };
    let s = |out: usize| AreaResize {
        c: 3,
        h: 1350,
        w: 1350,
        out_h: out,
        out_w: out,
        rows: (0, out),
        offset: -127.5,
        scale: 0.0078125,
    };
    // MTCNN on a 1350 x 1350 photo: P-Net's first pyramid level, and R-Net's
    // crops of `batch` boxes of 90 pixels.
    let boxes: Vec<Rect> =
        (0..batch).map(|i| (i * 37) % 1200).map(|o| Rect { y0: o, y1: o + 90, x0: o / 2, x1: o / 2 + 90 }).collect();
    Ok(vec![case(s(811), vec![Rect::whole(1350, 1350)], img.clone()), case(s(24), boxes, img)])
}

pub const FAMILY: Family = Family { name: "resample", gradcheck, refcheck, bench };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_input() {
        assert_eq!(windows(4, 2), vec![(0, 2), (2, 4)]);
        // 5 -> 3: [0,2), [1,4), [3,5) (overlapping, as PyTorch).
        assert_eq!(windows(5, 3), vec![(0, 2), (1, 4), (3, 5)]);
        // Upsampling repeats pixels.
        assert_eq!(windows(2, 4), vec![(0, 1), (0, 1), (1, 2), (1, 2)]);
    }

    #[test]
    fn area_resize_averages_by_hand() {
        // One channel, 2x4: the whole image to 1x2, then a 1x2 rectangle kept.
        let img = [0., 2., 4., 6., 8., 10., 12., 14.];
        let s = AreaResize { c: 1, h: 2, w: 4, out_h: 1, out_w: 2, rows: (0, 1), offset: 0.0, scale: 1.0 };
        assert_eq!(forward_ref(&s, &img, &[Rect::whole(2, 4)]), vec![5.0, 9.0]);
        let crop = [Rect { y0: 1, y1: 2, x0: 1, x1: 3 }];
        assert_eq!(forward_ref(&s, &img, &crop), vec![10.0, 12.0]);
        let normalised = AreaResize { offset: -1.0, scale: 0.5, ..s };
        assert_eq!(forward_ref(&normalised, &img, &crop), vec![4.5, 5.5]);
    }
}
