//! Linear layers, y = x W^T + b, and the strided batched matrix multiply
//! (`shaders/linear.wgsl`) they and the pointwise convolutions run on.

use super::epilogue::{self, Epilogue};
use super::{reduce, upload, Family};
use crate::gpu::{BenchCase, Gpu, Kernel, KernelSet, Launch, Params, Recorder, Shader, Split, Tensor};
use crate::kernels::check::{compare_f32, finite_diff, widen, CheckRow, Rng, Tol};
use anyhow::{bail, Result};

const MATMUL: Kernel = Kernel::new(Shader::Linear, "matmul", 64);
const SUM_SLICES: Kernel = Kernel::new(Shader::Linear, "sum_slices", 64);
/// One workgroup per output: the GPU set's sum for few outputs of a long K.
const SUM_SLICES_WIDE: Kernel = Kernel::new(Shader::Linear, "sum_slices_wide", 256);
/// Outputs few enough for the GPU set to cut K finer than `Split` does and
/// sum each output's slices with a workgroup...
const WIDE_MAX_OUTPUTS: usize = 4096;
/// ...into slices of this many terms...
const WIDE_PER_SLICE: usize = 128;
/// ...and at most this many of them, where K (times the batch it sums) is
/// at least `WIDE_MIN_LEN`.
const WIDE_MAX_SLICES: usize = 4096;
const WIDE_MIN_LEN: usize = 1 << 15;
/// 128x128 tiles of C per workgroup of 256 (the shader assumes 256).
const MATMUL_TILED: Kernel = Kernel::new(Shader::Linear, "matmul_tiled", 256);
const TILE: usize = 128;
/// The CPU set's product where C has columns enough to fill the lanes: 8
/// rows of C per workgroup, 4 columns per invocation.
const MATMUL_ROWS: Kernel = Kernel::new(Shader::Linear, "matmul_rows", 16);
const ROWS: usize = 8;
/// Rows of C per workgroup of the subgroup product: four pieces of A per
/// invocation, so 4 loads of B feed 128 vec4 FMAs (32 rows measured faster
/// than 16: BENCHMARKS.md); 16 where 32-row blocks would be mostly padding.
const SG_ROWS: usize = 32;
const SG_HALF_ROWS: usize = 16;
/// The CPU set's product that reads A as vec4s (8 rows x 4 consecutive
/// columns of C per invocation), one entry point per operand layout: A along
/// k or m; B along n or k as vec4s, or along n as floats (rows that do not
/// start on quads: a 7x7 map's 49 columns).
const MATMUL_QUADS: [[Kernel; 3]; 2] = [
    [
        Kernel::new(Shader::Linear, "matmul_quads_ak_bn", 16),
        Kernel::new(Shader::Linear, "matmul_quads_ak_bk", 16),
        Kernel::new(Shader::Linear, "matmul_quads_ak_bf", 16),
    ],
    [
        Kernel::new(Shader::Linear, "matmul_quads_am_bn", 16),
        Kernel::new(Shader::Linear, "matmul_quads_am_bk", 16),
        Kernel::new(Shader::Linear, "matmul_quads_am_bf", 16),
    ],
];
/// The same where the adapter's subgroups hold 8 invocations, with 32 rows
/// per workgroup: each row of A's block loaded by one invocation and
/// broadcast to the others.
const MATMUL_QUADS_SG: [[Kernel; 3]; 2] = [
    [
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg_ak_bn", 16),
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg_ak_bk", 16),
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg_ak_bf", 16),
    ],
    [
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg_am_bn", 16),
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg_am_bk", 16),
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg_am_bf", 16),
    ],
];
/// The subgroup product with 16 rows per workgroup.
const MATMUL_QUADS_SG16: [[Kernel; 3]; 2] = [
    [
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg16_ak_bn", 16),
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg16_ak_bk", 16),
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg16_ak_bf", 16),
    ],
    [
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg16_am_bn", 16),
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg16_am_bk", 16),
        Kernel::new(Shader::LinearSubgroup, "matmul_quads_sg16_am_bf", 16),
    ],
];
/// The tiled kernel's workgroups worth having in flight before K is cut
/// (a large GPU has about 100-150 multiprocessors).
const TILED_TARGET_WORKGROUPS: usize = 256;
/// The shortest K slice worth a tile's partial sums.
const TILED_MIN_K: usize = 256;

/// How a product's reduction is cut: `slices` in all, `k_slices` of them
/// along K (the rest along the batch, with `sum_batch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GemmSplit {
    slices: usize,
    k_slices: usize,
    b_chunk: usize,
    k_chunk: usize,
}

/// C[b, m, n] (+)= sum_k A[b, m, k] B[b, k, n] (+ bias), every operand
/// addressed by (batch, row, col) strides in elements.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: [usize; 3],
    pub b: [usize; 3],
    pub c: [usize; 3],
    bias_mode: usize,
    accumulate: bool,
    reduce_batch: bool,
    /// The epilogue's activation (`Epilogue::act_code`) and whether PReLU's
    /// slope is per row (else per column).
    act: usize,
    act_per_row: bool,
}

impl Gemm {
    /// Contiguous row-major operands; adjust strides with `a`, `b`, `c`.
    pub fn plain(m: usize, n: usize, k: usize, batch: usize) -> Gemm {
        Gemm {
            m,
            n,
            k,
            batch,
            a: [m * k, k, 1],
            b: [k * n, n, 1],
            c: [m * n, n, 1],
            bias_mode: 0,
            accumulate: false,
            reduce_batch: false,
            act: 0,
            act_per_row: false,
        }
    }
    pub fn a(mut self, batch: usize, row: usize, col: usize) -> Gemm {
        self.a = [batch, row, col];
        self
    }
    pub fn b(mut self, batch: usize, row: usize, col: usize) -> Gemm {
        self.b = [batch, row, col];
        self
    }
    pub fn c(mut self, batch: usize, row: usize, col: usize) -> Gemm {
        self.c = [batch, row, col];
        self
    }
    /// C += A B instead of C = A B.
    pub fn accumulate(mut self) -> Gemm {
        self.accumulate = true;
        self
    }
    /// The outputs of a layer whose channels are the rows of C (`per_row`:
    /// output channels of a convolution) or its columns (linear layers): its
    /// bias where it has one, then the epilogue `e` (its
    /// activation; a skip tensor already in C, added by `accumulate`).
    pub fn finishing(mut self, bias: bool, e: &Epilogue<Tensor>, per_row: bool) -> Gemm {
        (self.act, self.act_per_row) = (e.act_code(), per_row);
        if bias {
            self.bias_mode = if per_row { 2 } else { 1 };
        }
        self.accumulate |= e.skip.is_some();
        self
    }
    /// Sum the products of all batch entries into one C.
    pub fn sum_batch(mut self) -> Gemm {
        self.reduce_batch = true;
        self
    }

    fn out_batch(&self) -> usize {
        if self.reduce_batch {
            1
        } else {
            self.batch
        }
    }

    /// Invocations of one slice: 4x4 tiles of every C.
    fn tiles(&self) -> usize {
        self.m.div_ceil(4) * self.n.div_ceil(4) * self.out_batch()
    }

    /// The GPU set tiles C through workgroup memory where whole tiles are
    /// at least a quarter full.
    fn tiled(&self, set: KernelSet) -> bool {
        set == KernelSet::Gpu && self.m >= TILE / 2 && self.n >= TILE / 2
    }

    /// The CPU set broadcasts rows of A where C is at least 16 wide.
    fn by_rows(&self, set: KernelSet) -> bool {
        set == KernelSet::Cpu && self.n >= 16
    }

    /// The CPU set reads A four floats at a time where K is a multiple of 4
    /// and A is contiguous along one of its dimensions with the other
    /// strides (and that dimension, where a load spans it) whole quads; B
    /// likewise, or else along n by single floats: which entry point and its
    /// rows of C per workgroup, or None.
    fn quads(&self, set: KernelSet, subgroup_size: Option<u32>) -> Option<(Kernel, usize)> {
        let quad = |v: usize| v.is_multiple_of(4);
        if set != KernelSet::Cpu || !quad(self.k) || self.n < 16 {
            return None;
        }
        let [a_bs, a_ms, a_ks] = self.a;
        let [b_bs, b_ks, b_ns] = self.b;
        let a_along_k = a_ks == 1 && quad(a_ms);
        let a_along_m = a_ms == 1 && quad(a_ks) && quad(self.m);
        let b_quads = quad(b_bs);
        let b_along_n = b_quads && b_ns == 1 && quad(b_ks) && quad(self.n);
        let b_along_k = b_quads && b_ks == 1 && quad(b_ns);
        let b_floats = b_ns == 1;
        if !quad(a_bs) || !(a_along_k || a_along_m) || !(b_along_n || b_along_k || b_floats) {
            return None;
        }
        // The subgroup product's 32-row blocks, or 16-row ones where at
        // least half of those would be past M (MTCNN's layers of 10 and 16
        // channels); 8 rows of A loaded by every lane where M fits them (R-
        // and O-Net's dense layers on a few crops: blocks of 16 rows, twice
        // the multiply-adds, measured slower).
        let (kernels, rows) = match subgroup_size {
            Some(8) if self.m > ROWS && self.m <= SG_HALF_ROWS => (&MATMUL_QUADS_SG16, SG_HALF_ROWS),
            Some(8) if self.m > SG_HALF_ROWS => (&MATMUL_QUADS_SG, SG_ROWS),
            _ => (&MATMUL_QUADS, ROWS),
        };
        let b = if b_along_n {
            0
        } else if b_along_k {
            1
        } else {
            2
        };
        Some((kernels[usize::from(!a_along_k)][b], rows))
    }

    /// Workgroups of `rows` rows x 4 columns per invocation (the CPU set).
    fn row_blocks(&self, rows: usize) -> usize {
        self.m.div_ceil(rows) * self.n.div_ceil(4 * MATMUL_ROWS.wg as usize) * self.out_batch()
    }

    fn workgroup_tiles(&self) -> usize {
        self.m.div_ceil(TILE) * self.n.div_ceil(TILE) * self.out_batch()
    }

    /// An untiled product with few outputs and a long reduction (the
    /// 401408 -> 10 classifier): K cut into short slices, each output's
    /// slices summed by a workgroup. The GPU set for parallelism; the CPU
    /// set, where its vec4 product does not apply, for precision (one f32
    /// accumulator over 40000 terms misses the forward tolerance).
    fn wide_sum(&self, set: KernelSet) -> bool {
        let len = self.k * if self.reduce_batch { self.batch } else { 1 };
        let cpu_plain = set == KernelSet::Cpu && self.quads(set, None).is_none();
        (set == KernelSet::Gpu || cpu_plain)
            && !self.tiled(set)
            && self.out_batch() * self.m * self.n <= WIDE_MAX_OUTPUTS
            && len >= WIDE_MIN_LEN
    }

    /// The reduction (K, or batch x K with `sum_batch`) cut as `set` says:
    /// along the batch first, whole K per slice, where that is enough.
    fn split(&self, set: KernelSet) -> GemmSplit {
        let k = self.k.max(1);
        let batches = if self.reduce_batch { self.batch } else { 1 };
        // The vec4 product takes four terms per iteration, and writes no
        // partial sums: a longer reduction takes the sliced kernels, cut for
        // one term per iteration.
        let quads_whole =
            self.quads(set, None).is_some() && !Split::for_reduction(set, (batches * k).div_ceil(4), 1).is_split();
        let s = if self.tiled(set) {
            let wanted = TILED_TARGET_WORKGROUPS.div_ceil(self.workgroup_tiles());
            Split::slices(batches * k, wanted.min((batches * k / TILED_MIN_K).max(1)))
        } else if self.wide_sum(set) {
            Split::slices(batches * k, (batches * k).div_ceil(WIDE_PER_SLICE).min(WIDE_MAX_SLICES))
        } else if quads_whole {
            Split::whole(batches * k)
        } else {
            Split::for_reduction(set, batches * k, self.tiles())
        };
        if s.per_slice >= k {
            let b_chunk = (s.per_slice / k).min(batches);
            GemmSplit { slices: batches.div_ceil(b_chunk), k_slices: 1, b_chunk, k_chunk: k }
        } else {
            let ks = Split::slices(k, k.div_ceil(s.per_slice));
            GemmSplit { slices: batches * ks.slices, k_slices: ks.slices, b_chunk: 1, k_chunk: ks.per_slice }
        }
    }

    pub fn run(&self, rec: &mut Recorder, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, c: &Tensor) -> Result<()> {
        self.run_with(rec, a, b, bias, None, c)
    }

    /// `run` with PReLU's slopes for an epilogue that has them.
    pub fn run_with(
        &self,
        rec: &mut Recorder,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
        slope: Option<&Tensor>,
        c: &Tensor,
    ) -> Result<()> {
        if self.m == 0 || self.n == 0 || self.batch == 0 {
            bail!("matmul with an empty dimension: {self:?}");
        }
        if (self.bias_mode != 0) != bias.is_some() {
            bail!("matmul: bias given without a bias mode, or the reverse");
        }
        if (self.act == 1) != slope.is_some() {
            bail!("matmul: PReLU slopes given without PReLU, or the reverse");
        }
        let p = Params::new()
            .u("m", self.m)
            .u("n", self.n)
            .u("k", self.k)
            .u("batch", self.batch)
            .u("a_bs", self.a[0])
            .u("a_ms", self.a[1])
            .u("a_ks", self.a[2])
            .u("b_bs", self.b[0])
            .u("b_ks", self.b[1])
            .u("b_ns", self.b[2])
            .u("c_bs", self.c[0])
            .u("c_ms", self.c[1])
            .u("c_ns", self.c[2])
            .u("bias_mode", self.bias_mode)
            .u("accumulate", self.accumulate as usize)
            .u("reduce_batch", self.reduce_batch as usize);
        let set = rec.gpu().kernels;
        let split = self.split(set);
        let p = p
            .u("slices", split.slices)
            .u("k_slices", split.k_slices)
            .u("b_chunk", split.b_chunk)
            .u("k_chunk", split.k_chunk)
            .u("act", self.act)
            .u("act_axis", if self.act_per_row { 2 } else { 1 });
        let serial = split.k_chunk * if self.reduce_batch { split.b_chunk } else { 1 };
        let quads = self.quads(set, rec.gpu().subgroup_size).filter(|_| split.slices == 1);
        let (kernel, launch) = if self.tiled(set) {
            (MATMUL_TILED, Launch::groups(self.workgroup_tiles() * split.slices, serial))
        } else if let Some((kernel, rows)) = quads {
            (kernel, Launch::groups(self.row_blocks(rows), serial.div_ceil(4)))
        } else if self.by_rows(set) && split.slices == 1 {
            (MATMUL_ROWS, Launch::groups(self.row_blocks(ROWS), serial))
        } else {
            (MATMUL, Launch::threads(self.tiles() * split.slices, MATMUL.wg, serial))
        };
        if quads.is_some() {
            let args = [(6, Some(a)), (7, Some(b)), (2, Some(b)), (3, bias), (4, Some(c)), (8, slope)];
            return rec.dispatch(kernel, &p, &args, launch);
        }
        if split.slices == 1 {
            // (matmul_rows never writes partial sums, so it has no binding 5)
            let args = [(1, Some(a)), (2, Some(b)), (3, bias), (4, Some(c)), (8, slope), (5, None)];
            let bound = if kernel == MATMUL_ROWS { &args[..5] } else { &args[..] };
            return rec.dispatch(kernel, &p, bound, launch);
        }
        let count = self.out_batch() * self.m * self.n;
        let parts = Tensor::uninit(rec.gpu(), &[split.slices, count])?;
        let args = [(1, Some(a)), (2, Some(b)), (3, None), (4, Some(c)), (5, Some(&parts)), (8, None)];
        rec.dispatch(kernel, &p, &args, launch)?;
        let args = [(3, bias), (4, Some(c)), (5, Some(&parts)), (8, slope)];
        if self.wide_sum(set) {
            let wide = SUM_SLICES_WIDE;
            let serial = split.slices.div_ceil(wide.wg as usize) + wide.wg.trailing_zeros() as usize;
            return rec.dispatch(wide, &p, &args, Launch::groups(count, serial));
        }
        rec.dispatch(SUM_SLICES, &p, &args, Launch::threads(count, SUM_SLICES.wg, split.slices))
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub n: usize,
    pub inp: usize,
    pub out: usize,
    pub bias: bool,
}

impl Linear {
    pub fn describe(&self) -> String {
        format!("n{} {}->{}{}", self.n, self.inp, self.out, if self.bias { " +bias" } else { "" })
    }
}

// ---------------------------------------------------------------- reference

pub fn forward_ref(s: &Linear, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let mut y = vec![0.0; s.n * s.out];
    for r in 0..s.n {
        for o in 0..s.out {
            let dot: f64 = (0..s.inp).map(|i| x[r * s.inp + i] * w[o * s.inp + i]).sum();
            y[r * s.out + o] = dot + b.map_or(0.0, |b| b[o]);
        }
    }
    y
}

/// (dx, dw, db)
pub fn backward_ref(s: &Linear, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; s.out]);
    for r in 0..s.n {
        for o in 0..s.out {
            let d = dy[r * s.out + o];
            db[o] += d;
            for i in 0..s.inp {
                dx[r * s.inp + i] += d * w[o * s.inp + i];
                dw[o * s.inp + i] += d * x[r * s.inp + i];
            }
        }
    }
    (dx, dw, db)
}

// ---------------------------------------------------------------------- GPU

pub fn forward(rec: &mut Recorder, s: &Linear, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    forward_with(rec, s, x, w, b, &Epilogue::none())
}

/// `forward` finishing each output with the epilogue `e` (the output's
/// channels are its columns).
pub fn forward_with(
    rec: &mut Recorder,
    s: &Linear,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    e: &Epilogue<Tensor>,
) -> Result<Tensor> {
    let y = epilogue_output(rec, x, &[s.n, s.out], e)?;
    // B[k, n] = W[n, k]: W read transposed through its strides.
    let g = Gemm::plain(s.n, s.out, s.inp, 1).b(0, 1, s.inp).finishing(b.is_some(), e, false);
    g.run_with(rec, x, w, b, e.slope(), &y)?;
    Ok(y)
}

/// The output of a layer with epilogue `e`, stored as its input `x` is:
/// holding the skip tensor where there is one (the layer adds its results
/// to it), else a kernel output (every path writes every element: no
/// clearing, and the memory plan may give it the storage of a value that
/// died in this recording).
pub(crate) fn epilogue_output(rec: &mut Recorder, x: &Tensor, shape: &[usize], e: &Epilogue<Tensor>) -> Result<Tensor> {
    let Some(skip) = e.skip else { return Tensor::uninit_like(rec.gpu(), x, shape) };
    if skip.numel() != shape.iter().product::<usize>() {
        bail!("a skip tensor {:?} added to an output {:?}", skip.shape, shape);
    }
    let y = Tensor::uninit_like(rec.gpu(), skip, shape)?;
    rec.copy(skip, &y)?;
    Ok(y)
}

pub struct LinearGrads<T = Tensor> {
    pub dx: T,
    pub dw: T,
    pub db: Option<T>,
}

pub fn backward(rec: &mut Recorder, s: &Linear, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<LinearGrads> {
    let gpu = rec.gpu();
    let dx = Tensor::zeros(gpu, &[s.n, s.inp])?;
    let dw = Tensor::zeros(gpu, &[s.out, s.inp])?;
    // dx = dy W
    Gemm::plain(s.n, s.inp, s.out, 1).run(rec, dy, w, None, &dx)?;
    // dW = dy^T x: A[o, r] = dy[r, o]
    Gemm::plain(s.out, s.inp, s.n, 1).a(0, 1, s.out).run(rec, dy, x, None, &dw)?;
    let db = if s.bias { Some(reduce::channel_sum(rec, dy, s.n, s.out, 1)?) } else { None };
    Ok(LinearGrads { dx, dw, db })
}

// ------------------------------------------------------------------- checks

fn shapes(rng: &mut Rng) -> Vec<Linear> {
    vec![
        Linear { n: 1, inp: 1, out: 1, bias: true },
        Linear { n: 4, inp: 128, out: 10, bias: false },
        Linear { n: 7, inp: 13, out: 5, bias: true },
        Linear { n: 3, inp: 97, out: 31, bias: true },
        Linear { n: 33, inp: 65, out: 67, bias: true },
        // The GPU set's tiled product at partial tiles, forward with K cut
        // into two slices.
        Linear { n: 70, inp: 600, out: 66, bias: true },
        // The GPU set's long-K product with few outputs: K cut into 313
        // slices, each output's summed by a workgroup.
        Linear { n: 3, inp: 40_000, out: 5, bias: true },
        // Past llvmpipe's 65535 loop iterations per invocation: the CPU set
        // must cut it too (MiniNetwork's classifier at 32x32 is 131072 long).
        Linear { n: 3, inp: 131_072, out: 5, bias: true },
        Linear { n: rng.range(1, 40), inp: rng.range(1, 300), out: rng.range(1, 70), bias: true },
    ]
}

/// How a layout check reads B: along n in quads, along k, along n by floats.
const B_LAYOUTS: [&str; 3] = ["n", "k", "n (floats)"];

/// Products with A stored along k or along m and B in each of `B_LAYOUTS`
/// (the six entry points of the CPU set's vec4 product), at partial row and
/// column blocks, some summing their batch, against a host product; 20 rows
/// and 12 (the subgroup product's 32- and 16-row blocks). B's rows of 45
/// floats do not start on quads.
fn layout_products() -> Vec<(bool, usize, Gemm)> {
    [20, 12].into_iter().flat_map(layout_products_of).collect()
}

fn layout_products_of(m: usize) -> [(bool, usize, Gemm); 6] {
    let (k, batch) = (36, 2);
    let layout = |a_along_k: bool, b: usize| {
        let n = if b == 2 { 45 } else { 44 };
        let g = Gemm::plain(m, n, k, batch);
        let g = if a_along_k { g } else { g.a(m * k, 1, m) };
        if b == 1 {
            g.b(k * n, 1, k)
        } else {
            g
        }
    };
    [
        (true, 0, layout(true, 0)),
        (false, 0, layout(false, 0).sum_batch()),
        (true, 1, layout(true, 1)),
        (false, 1, layout(false, 1).sum_batch()),
        (true, 2, layout(true, 2).sum_batch()),
        (false, 2, layout(false, 2)),
    ]
}

fn layout_rows(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for (a_along_k, b_layout, g) in layout_products() {
        let a = rng.uniform(g.batch * g.m * g.k, -1.0, 1.0);
        let b = rng.uniform(g.batch * g.k * g.n, -1.0, 1.0);
        let out = g.out_batch() * g.m * g.n;
        let mut want = vec![0.0f64; out];
        for bb in 0..g.batch {
            let ob = if g.reduce_batch { 0 } else { bb };
            for i in 0..g.m {
                for j in 0..g.n {
                    let dot: f64 = (0..g.k)
                        .map(|kk| {
                            let av = a[bb * g.a[0] + i * g.a[1] + kk * g.a[2]] as f64;
                            av * b[bb * g.b[0] + kk * g.b[1] + j * g.b[2]] as f64
                        })
                        .sum();
                    want[ob * g.m * g.n + i * g.n + j] += dot;
                }
            }
        }
        let c = Tensor::zeros(gpu, &[out])?;
        let mut rec = Recorder::new(gpu);
        g.run(&mut rec, &upload(gpu, &a, &[a.len()])?, &upload(gpu, &b, &[b.len()])?, None, &c)?;
        rec.submit();
        let shape = format!(
            "{}x{}x{} batch {}{}, A along {}, B along {}",
            g.m,
            g.n,
            g.k,
            g.batch,
            if g.reduce_batch { " summed" } else { "" },
            if a_along_k { "k" } else { "m" },
            B_LAYOUTS[b_layout]
        );
        rows.push(compare_f32("matmul", "forward", &shape, &c.to_vec(gpu), &want, Tol::FORWARD));
    }
    Ok(rows)
}

fn gradcheck(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let mut rows = layout_rows(gpu, rng)?;
    for s in shapes(rng) {
        let xs = rng.uniform(s.n * s.inp, -1.0, 1.0);
        let ws = rng.uniform(s.out * s.inp, -0.5, 0.5);
        let bs = rng.uniform(s.out, -0.5, 0.5);
        let dys = rng.uniform(s.n * s.out, -1.0, 1.0);
        let x = upload(gpu, &xs, &[s.n, s.inp])?;
        let w = upload(gpu, &ws, &[s.out, s.inp])?;
        let b = upload(gpu, &bs, &[s.out])?;
        let dy = upload(gpu, &dys, &[s.n, s.out])?;
        let mut rec = Recorder::new(gpu);
        let y = forward(&mut rec, &s, &x, &w, s.bias.then_some(&b))?;
        let g = backward(&mut rec, &s, &x, &w, &dy)?;
        rec.submit();
        let (xr, wr, br) = (widen(&xs), widen(&ws), widen(&bs));
        let yr = forward_ref(&s, &xr, &wr, s.bias.then_some(&br[..]));
        let (dxr, dwr, dbr) = backward_ref(&s, &xr, &wr, &widen(&dys));
        let shape = s.describe();
        rows.push(compare_f32("linear", "forward", &shape, &y.to_vec(gpu), &yr, Tol::FORWARD));
        rows.push(compare_f32("linear", "backward input", &shape, &g.dx.to_vec(gpu), &dxr, Tol::BACKWARD));
        rows.push(compare_f32("linear", "backward weight", &shape, &g.dw.to_vec(gpu), &dwr, Tol::BACKWARD));
        if let Some(db) = g.db {
            rows.push(compare_f32("linear", "backward bias", &shape, &db.to_vec(gpu), &dbr, Tol::BACKWARD));
        }
        let run = |rec: &mut Recorder, e: &Epilogue<Tensor>| forward_with(rec, &s, &x, &w, s.bias.then_some(&b), e);
        rows.extend(epilogue::check_rows(gpu, rng, ("linear", &shape), &yr, (s.out, 1), &run)?);
    }
    Ok(rows)
}

fn refcheck(rng: &mut Rng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for s in shapes(rng) {
        let x = widen(&rng.uniform(s.n * s.inp, -1.0, 1.0));
        let w = widen(&rng.uniform(s.out * s.inp, -1.0, 1.0));
        let b = widen(&rng.uniform(s.out, -1.0, 1.0));
        let dy = widen(&rng.uniform(s.n * s.out, -1.0, 1.0));
        let fwd = |v: &[Vec<f64>]| forward_ref(&s, &v[0], &v[1], Some(&v[2]));
        let bwd = |v: &[Vec<f64>], dy: &[f64]| {
            let (dx, dw, db) = backward_ref(&s, &v[0], &v[1], dy);
            vec![dx, dw, db]
        };
        rows.extend(finite_diff("linear", &s.describe(), &["x", "w", "b"], &[x, w, b], &dy, &fwd, &bwd, rng));
    }
    rows
}

// -------------------------------------------------------------------- bench

fn bench(gpu: &Gpu, batch: usize) -> Result<Vec<BenchCase>> {
    let mut cases = Vec::new();
    // MobileFaceNet's 512 -> 128 embedding and MiniNetwork's classifier at
    // 56x56 inputs (at 112x112 it is 128*112*112 wide: see the models issue).
    for s in [
        Linear { n: batch, inp: 512, out: 128, bias: true },
        Linear { n: batch, inp: 128 * 56 * 56, out: 10, bias: true },
    ] {
        let x = Tensor::zeros(gpu, &[s.n, s.inp])?;
        let w = Tensor::zeros(gpu, &[s.out, s.inp])?;
        let b = Tensor::zeros(gpu, &[s.out])?;
        let dy = Tensor::zeros(gpu, &[s.n, s.out])?;
        let flops = 2.0 * (s.n * s.inp * s.out) as f64;
        let io = 4.0 * (x.numel() + w.numel() + dy.numel()) as f64;
        let (x2, w2) = (x.clone(), w.clone());
        cases.push(BenchCase::new("linear", "forward", &s.describe(), flops, io, move |rec| {
            forward(rec, &s, &x, &w, s.bias.then_some(&b)).map(drop)
        }));
        cases.push(BenchCase::new("linear", "backward", &s.describe(), 2.0 * flops, 2.0 * io, move |rec| {
            backward(rec, &s, &x2, &w2, &dy).map(drop)
        }));
    }
    // The plain row-major 1024^3 product: the practical ceiling of the device
    // that BENCHMARKS.md compares every kernel with.
    let n = 1024;
    let (a, b, c) = (Tensor::zeros(gpu, &[n, n])?, Tensor::zeros(gpu, &[n, n])?, Tensor::zeros(gpu, &[n, n])?);
    let flops = 2.0 * (n * n * n) as f64;
    cases.push(BenchCase::new(
        "matmul 1024^3",
        "forward",
        "1024x1024 @ 1024x1024",
        flops,
        12.0 * (n * n) as f64,
        move |rec| Gemm::plain(n, n, n, 1).run(rec, &a, &b, None, &c),
    ));
    Ok(cases)
}

pub const FAMILY: Family = Family { name: "linear", gradcheck, refcheck, bench };

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernel_set::CPU_MAX_SERIAL;

    /// The checked shapes reach the sliced and tiled paths they are there for.
    #[test]
    fn checked_shapes_reach_the_tiled_and_sliced_paths() {
        let forward = Gemm::plain(70, 66, 600, 1);
        assert!(forward.tiled(KernelSet::Gpu) && !forward.tiled(KernelSet::Cpu));
        assert_eq!(forward.split(KernelSet::Gpu).slices, 2);
        assert_eq!(forward.split(KernelSet::Cpu).slices, 1);
        // conv2d's 1x1 check c(3, 64, 12, 15, 70): dW sums 3 images of 180.
        let dw = Gemm::plain(70, 64, 180, 3).sum_batch();
        let s = dw.split(KernelSet::Gpu);
        assert!(dw.tiled(KernelSet::Gpu) && s.slices == 3 && s.b_chunk == 1, "{s:?}");
        // The CPU set's row-broadcast product, at partial row and column
        // blocks (the 33 x 65 -> 67 linear check).
        assert!(Gemm::plain(33, 67, 65, 1).by_rows(KernelSet::Cpu));
        assert!(!Gemm::plain(33, 67, 65, 1).by_rows(KernelSet::Gpu));
        // Each layout reaches its vec4 entry point in the CPU set, with
        // 16-row subgroup blocks for 12 rows, 32-row ones for 20.
        for (a_along_k, b, g) in layout_products() {
            let a = usize::from(!a_along_k);
            let sg = if g.m <= 16 { (MATMUL_QUADS_SG16[a][b], 16) } else { (MATMUL_QUADS_SG[a][b], 32) };
            assert_eq!(g.quads(KernelSet::Cpu, None), Some((MATMUL_QUADS[a][b], 8)));
            assert_eq!(g.quads(KernelSet::Cpu, Some(4)), Some((MATMUL_QUADS[a][b], 8)));
            assert_eq!(g.quads(KernelSet::Cpu, Some(8)), Some(sg));
            assert_eq!(g.quads(KernelSet::Gpu, Some(8)), None);
        }
        let long = Gemm::plain(3, 5, 40_000, 1).b(0, 1, 40_000);
        assert!(long.wide_sum(KernelSet::Gpu) && long.wide_sum(KernelSet::Cpu));
        assert_eq!(long.split(KernelSet::Gpu).slices, 313);
        assert_eq!(long.split(KernelSet::Cpu).slices, 313);
        // The 401408 -> 10 linear: K cut into slices of 128, summed wide.
        let long = Gemm::plain(32, 10, 401_408, 1);
        let s = long.split(KernelSet::Gpu);
        assert!(long.wide_sum(KernelSet::Gpu), "{s:?}");
        assert!(s.k_chunk <= WIDE_PER_SLICE && s.slices <= WIDE_MAX_SLICES, "{s:?}");
        // The CPU set cuts what would pass llvmpipe's loop limit, while a
        // vec4 product four times as long as the limit's share stays whole.
        let s = Gemm::plain(100, 50, 131_073, 1).split(KernelSet::Cpu);
        assert!(s.slices == 5 && s.k_chunk <= CPU_MAX_SERIAL, "{s:?}");
        let quads = Gemm::plain(64, 64, 4 * CPU_MAX_SERIAL, 1);
        assert!(quads.quads(KernelSet::Cpu, None).is_some() && quads.split(KernelSet::Cpu).slices == 1);
        // Longer, the vec4 product (which writes no partial sums) gives way
        // to the sliced kernels, whose slices stay within the limit at one
        // term per iteration (MiniNetwork's 112x112 stem: dW sums 32 images
        // of 12544 im2col columns).
        for g in [Gemm::plain(64, 64, 4 * CPU_MAX_SERIAL + 4, 1), Gemm::plain(32, 27, 12_544, 32).sum_batch()] {
            let s = g.split(KernelSet::Cpu);
            assert!(g.quads(KernelSet::Cpu, None).is_some() && s.slices > 1, "{s:?}");
            assert!(s.k_chunk * s.b_chunk <= CPU_MAX_SERIAL, "{s:?}");
        }
    }
}
