// Strided, batched matrix multiply:
//   C[b, m, n] (+)= sum_k A[b, m, k] * B[b, k, n]  (+ bias)
// Every operand is addressed through (batch, row, col) strides, so transposes
// are free: linear forward/backward and 1x1 convolutions are all this kernel.
// With `reduce_batch` the batch index is summed too (C[m, n] = sum_b sum_k),
// which is the weight gradient of a 1x1 convolution.
//
// Each thread owns 4x4 outputs of C held in registers and streams K: no
// shared memory and no barriers (workgroup barriers are slow on lavapipe),
// and still a sound register-blocked kernel on a real GPU.
//
// A long reduction (K, or batch x K with reduce_batch) can be cut into
// slices (src/gpu/kernel_set.rs: Split): slice s covers batch entries
// [sb * b_chunk, ...) and k in [sk * k_chunk, ...), and writes its partial
// C into `part` (slice-major, contiguous, no bias); sum_slices then adds the
// slices in order and applies bias, accumulate and C's strides.

struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    a_bs: u32, a_ms: u32, a_ks: u32,
    b_bs: u32, b_ks: u32, b_ns: u32,
    c_bs: u32, c_ms: u32, c_ns: u32,
    bias_mode: u32,      // 0 none, 1 bias[n] (linear), 2 bias[m] (conv channel)
    accumulate: u32,     // 1: C += result
    reduce_batch: u32,   // 1: sum over the batch into one C
    slices: u32, k_slices: u32, b_chunk: u32, k_chunk: u32,
    // The epilogue after the bias: the activation (common.wgsl:
    // epilogue_act), its slope per column (1) or per row (2) as bias_mode;
    // a skip tensor is added through `accumulate` (C holds it beforehand).
    act: u32, act_axis: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
@group(0) @binding(8) var<storage, read> slope: array<f32>;

// The epilogue's part for row mi of C, where the bias and activation are
// per row (a conv's channels): one scalar load each, the same in every lane,
// applied to four outputs `v` of that row.
fn finish_row(mi: u32, v: vec4<f32>) -> vec4<f32> {
    var out = v;
    if (p.bias_mode == 2u) { out += vec4(bias[mi]); }
    if (p.act != 0u && p.act_axis == 2u) {
        var k = 0.0;
        if (p.act == 1u) { k = slope[mi]; }
        out = epilogue_act4(p.act, out, k);
    }
    return out;
}

// The rest for C's element (bo, mi, nj) holding `value`: a per-column bias
// and activation, accumulate, strides.
fn store_col(bo: u32, mi: u32, nj: u32, value: f32) {
    var v = value;
    if (p.bias_mode == 1u) { v += bias[nj]; }
    if (p.act != 0u && p.act_axis == 1u) {
        var k = 0.0;
        if (p.act == 1u) { k = slope[nj]; }
        v = epilogue_act(p.act, v, k);
    }
    let ci = bo * p.c_bs + mi * p.c_ms + nj * p.c_ns;
    if (p.accumulate != 0u) { v += c[ci]; }
    c[ci] = v;
}

// C's element (bo, mi, nj) holding `value`: bias, activation, accumulate,
// strides.
fn store_c(bo: u32, mi: u32, nj: u32, value: f32) {
    store_col(bo, mi, nj, finish_row(mi, vec4(value)).x);
}

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let t = flat_thread(wid, nwg, lid);
    let tiles_m = (p.m + 3u) / 4u;
    let tiles_n = (p.n + 3u) / 4u;
    let out_batch = select(p.batch, 1u, p.reduce_batch != 0u);
    let tiles = tiles_m * tiles_n * out_batch;
    if (t >= tiles * p.slices) { return; }
    let slice = t / tiles;
    let sb = slice / p.k_slices;
    let k_first = (slice - sb * p.k_slices) * p.k_chunk;
    let k_last = min(k_first + p.k_chunk, p.k);
    // Rows m0..m0+3 are consecutive; columns are strided by tiles_n
    // (tn, tn + tiles_n, ...), so neighbouring threads own neighbouring
    // columns and their loads of B (and stores of C) are contiguous, while
    // they share the same rows of A (a broadcast).
    let tile = t - slice * tiles;
    let m0 = (tile / tiles_n) % tiles_m * 4u;
    let tn = tile % tiles_n;
    let bo = tile / (tiles_m * tiles_n);
    // Rows/cols past the edge are clamped to the last valid one (their
    // results are discarded) so the inner loop has no branches.
    var am = vec4<u32>(0u);
    var bn = vec4<u32>(0u);
    for (var i = 0u; i < 4u; i++) {
        am[i] = min(m0 + i, p.m - 1u) * p.a_ms;
        bn[i] = min(tn + i * tiles_n, p.n - 1u) * p.b_ns;
    }
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let b_first = select(bo, sb * p.b_chunk, p.reduce_batch != 0u);
    let b_last = select(bo + 1u, min(b_first + p.b_chunk, p.batch), p.reduce_batch != 0u);
    for (var bb = b_first; bb < b_last; bb++) {
        var ao = bb * p.a_bs + k_first * p.a_ks;
        var bo_ = bb * p.b_bs + k_first * p.b_ks;
        for (var k = k_first; k < k_last; k++) {
            let av = vec4<f32>(a[ao + am.x], a[ao + am.y], a[ao + am.z], a[ao + am.w]);
            let bv = vec4<f32>(b[bo_ + bn.x], b[bo_ + bn.y], b[bo_ + bn.z], b[bo_ + bn.w]);
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
            ao += p.a_ks;
            bo_ += p.b_ks;
        }
    }
    var rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let mi = m0 + i;
        if (mi >= p.m) { break; }
        for (var j = 0u; j < 4u; j++) {
            let nj = tn + j * tiles_n;
            if (nj >= p.n) { break; }
            if (p.slices > 1u) {
                part[((slice * out_batch + bo) * p.m + mi) * p.n + nj] = rows[i][j];
            } else {
                store_c(bo, mi, nj, rows[i][j]);
            }
        }
    }
}

// One thread per element of C: the slices' partials in order, then bias,
// accumulate and strides.
@compute @workgroup_size(WG)
fn sum_slices(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = flat_thread(wid, nwg, lid);
    let out_batch = select(p.batch, 1u, p.reduce_batch != 0u);
    let count = out_batch * p.m * p.n;
    if (t >= count) { return; }
    var v = 0.0;
    for (var s = 0u; s < p.slices; s++) { v += part[s * count + t]; }
    let nj = t % p.n;
    let mi = (t / p.n) % p.m;
    store_c(t / (p.m * p.n), mi, nj, v);
}

// One workgroup per element of C, for few outputs of many slices (the GPU
// set's long-K products, such as a classifier over 401,408 inputs): each
// invocation adds every WG-th slice in order, then wg_sum's fixed tree.
@compute @workgroup_size(WG)
fn sum_slices_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let t = flat_workgroup(wid, nwg);
    let out_batch = select(p.batch, 1u, p.reduce_batch != 0u);
    let count = out_batch * p.m * p.n;
    let valid = t < count;
    var v = 0.0;
    if (valid) {
        for (var s = lid; s < p.slices; s += WG) { v += part[s * count + t]; }
    }
    v = wg_sum(v, lid);
    if (valid && lid == 0u) {
        store_c(t / (p.m * p.n), (t / p.n) % p.m, t % p.n, v);
    }
}

// ---------------------------------------------------------------------------
// The GPU set's product (src/kernels/linear.rs: Gemm on KernelSet::Gpu):
// a 128x128 tile of C per workgroup of 256 (WG must be 256), 8x8 outputs
// per invocation in registers, A and B staged through workgroup memory 8
// k at a time. Same Params, slices and outputs as `matmul`. Each thread
// owns rows ty*4..+3 and 64+ty*4..+3 and the same columns of tx, so the
// workgroup-memory reads are one vec4 broadcast (A) and 16 consecutive vec4
// (B) per warp.

const TILE: u32 = 128u;
const TK: u32 = 8u;
var<workgroup> a_tile: array<vec4<f32>, 256>; // [TK][TILE / 4], rows of A
var<workgroup> b_tile: array<vec4<f32>, 256>; // [TK][TILE / 4], cols of B

// Four consecutive columns of one row of a tile's C.
fn put_row(slice: u32, bo: u32, mi: u32, n0: u32, v: vec4<f32>) {
    if (mi >= p.m) { return; }
    let out_batch = select(p.batch, 1u, p.reduce_batch != 0u);
    for (var j = 0u; j < 4u; j++) {
        let nj = n0 + j;
        if (nj >= p.n) { return; }
        if (p.slices > 1u) {
            part[((slice * out_batch + bo) * p.m + mi) * p.n + nj] = v[j];
        } else {
            store_c(bo, mi, nj, v[j]);
        }
    }
}

@compute @workgroup_size(WG)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let tiles_m = (p.m + TILE - 1u) / TILE;
    let tiles_n = (p.n + TILE - 1u) / TILE;
    let out_batch = select(p.batch, 1u, p.reduce_batch != 0u);
    let tiles = tiles_m * tiles_n * out_batch;
    let g = flat_workgroup(wid, nwg);
    // No early return: every invocation must reach the barriers.
    let valid = g < tiles * p.slices;
    let slice = g / tiles;
    let tile = g - slice * tiles;
    let tn0 = (tile % tiles_n) * TILE;
    let tm0 = (tile / tiles_n) % tiles_m * TILE;
    let bo = tile / (tiles_m * tiles_n);
    let sb = slice / p.k_slices;
    let k_first = (slice - sb * p.k_slices) * p.k_chunk;
    let k_last = min(k_first + p.k_chunk, p.k);
    let b_first = select(bo, sb * p.b_chunk, p.reduce_batch != 0u);
    let b_last = select(bo + 1u, min(b_first + p.b_chunk, p.batch), p.reduce_batch != 0u);
    let tx = lid % 16u;
    let ty = lid / 16u;
    var c0a = vec4<f32>(0.0);
    var c0b = vec4<f32>(0.0);
    var c1a = vec4<f32>(0.0);
    var c1b = vec4<f32>(0.0);
    var c2a = vec4<f32>(0.0);
    var c2b = vec4<f32>(0.0);
    var c3a = vec4<f32>(0.0);
    var c3b = vec4<f32>(0.0);
    var c4a = vec4<f32>(0.0);
    var c4b = vec4<f32>(0.0);
    var c5a = vec4<f32>(0.0);
    var c5b = vec4<f32>(0.0);
    var c6a = vec4<f32>(0.0);
    var c6b = vec4<f32>(0.0);
    var c7a = vec4<f32>(0.0);
    var c7b = vec4<f32>(0.0);
    for (var bb = b_first; bb < select(b_first, b_last, valid); bb++) {
        for (var k0 = k_first; k0 < k_last; k0 += TK) {
            // Stage A[tm0.., k0..] and B[k0.., tn0..]: 4 elements each per
            // invocation, consecutive invocations along the operand's
            // contiguous dimension; zeros past the edges.
            for (var i = 0u; i < 4u; i++) {
                let e = lid + i * 256u;
                var r = e % TILE;
                var kk = e / TILE;
                if (p.a_ks == 1u) { r = e / TK; kk = e % TK; }
                let gm = tm0 + r;
                let gk = k0 + kk;
                var v = 0.0;
                if (gm < p.m && gk < k_last) { v = a[bb * p.a_bs + gm * p.a_ms + gk * p.a_ks]; }
                a_tile[kk * 32u + r / 4u][r % 4u] = v;
                var col = e % TILE;
                var kb = e / TILE;
                if (p.b_ns != 1u) { col = e / TK; kb = e % TK; }
                let gn = tn0 + col;
                let gkb = k0 + kb;
                var w = 0.0;
                if (gn < p.n && gkb < k_last) { w = b[bb * p.b_bs + gkb * p.b_ks + gn * p.b_ns]; }
                b_tile[kb * 32u + col / 4u][col % 4u] = w;
            }
            workgroupBarrier();
            for (var kk = 0u; kk < TK; kk++) {
                let a0 = a_tile[kk * 32u + ty];
                let a1 = a_tile[kk * 32u + 16u + ty];
                let b0 = b_tile[kk * 32u + tx];
                let b1 = b_tile[kk * 32u + 16u + tx];
                c0a += a0.x * b0; c0b += a0.x * b1;
                c1a += a0.y * b0; c1b += a0.y * b1;
                c2a += a0.z * b0; c2b += a0.z * b1;
                c3a += a0.w * b0; c3b += a0.w * b1;
                c4a += a1.x * b0; c4b += a1.x * b1;
                c5a += a1.y * b0; c5b += a1.y * b1;
                c6a += a1.z * b0; c6b += a1.z * b1;
                c7a += a1.w * b0; c7b += a1.w * b1;
            }
            workgroupBarrier();
        }
    }
    if (!valid) { return; }
    put_row(slice, bo, tm0 + ty * 4u + 0u, tn0 + tx * 4u, c0a);
    put_row(slice, bo, tm0 + ty * 4u + 0u, tn0 + 64u + tx * 4u, c0b);
    put_row(slice, bo, tm0 + ty * 4u + 1u, tn0 + tx * 4u, c1a);
    put_row(slice, bo, tm0 + ty * 4u + 1u, tn0 + 64u + tx * 4u, c1b);
    put_row(slice, bo, tm0 + ty * 4u + 2u, tn0 + tx * 4u, c2a);
    put_row(slice, bo, tm0 + ty * 4u + 2u, tn0 + 64u + tx * 4u, c2b);
    put_row(slice, bo, tm0 + ty * 4u + 3u, tn0 + tx * 4u, c3a);
    put_row(slice, bo, tm0 + ty * 4u + 3u, tn0 + 64u + tx * 4u, c3b);
    put_row(slice, bo, tm0 + 64u + ty * 4u + 0u, tn0 + tx * 4u, c4a);
    put_row(slice, bo, tm0 + 64u + ty * 4u + 0u, tn0 + 64u + tx * 4u, c4b);
    put_row(slice, bo, tm0 + 64u + ty * 4u + 1u, tn0 + tx * 4u, c5a);
    put_row(slice, bo, tm0 + 64u + ty * 4u + 1u, tn0 + 64u + tx * 4u, c5b);
    put_row(slice, bo, tm0 + 64u + ty * 4u + 2u, tn0 + tx * 4u, c6a);
    put_row(slice, bo, tm0 + 64u + ty * 4u + 2u, tn0 + 64u + tx * 4u, c6b);
    put_row(slice, bo, tm0 + 64u + ty * 4u + 3u, tn0 + tx * 4u, c7a);
    put_row(slice, bo, tm0 + 64u + ty * 4u + 3u, tn0 + 64u + tx * 4u, c7b);
}

// ---------------------------------------------------------------------------
// The CPU set's product (src/kernels/linear.rs: Gemm on KernelSet::Cpu),
// shaped for lavapipe, which runs 8 invocations per AVX2 vector and one
// workgroup per thread: a workgroup owns 8 rows of C, taken from the
// workgroup id, so every load of A has the same address in all lanes (one
// scalar load, broadcast); each invocation owns 4 columns strided by WG, so
// the 4 loads of B per k are contiguous across lanes and feed 32
// multiply-adds. No workgroup memory, no barriers, no division in the loop;
// rows and columns past the edge are clamped (their results dropped). One
// slice only (the CPU set never cuts a reduction).

// Four columns `cols` of row `mi` of C.
fn put_cols(bo: u32, mi: u32, cols: vec4<u32>, v: vec4<f32>) {
    if (mi >= p.m) { return; }
    let r = finish_row(mi, v);
    for (var j = 0u; j < 4u; j++) {
        if (cols[j] < p.n) { store_col(bo, mi, cols[j], r[j]); }
    }
}

// Rows m0..m0+8 of C at `cols` (the CPU set's products own 8 or 32 rows).
fn put_8_rows(bo: u32, m0: u32, cols: vec4<u32>, c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>,
              c4: vec4<f32>, c5: vec4<f32>, c6: vec4<f32>, c7: vec4<f32>) {
    put_cols(bo, m0, cols, c0);
    put_cols(bo, m0 + 1u, cols, c1);
    put_cols(bo, m0 + 2u, cols, c2);
    put_cols(bo, m0 + 3u, cols, c3);
    put_cols(bo, m0 + 4u, cols, c4);
    put_cols(bo, m0 + 5u, cols, c5);
    put_cols(bo, m0 + 6u, cols, c6);
    put_cols(bo, m0 + 7u, cols, c7);
}

@compute @workgroup_size(WG)
fn matmul_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row_blocks = (p.m + 7u) / 8u;
    let col_blocks = (p.n + 4u * WG - 1u) / (4u * WG);
    let out_batch = select(p.batch, 1u, p.reduce_batch != 0u);
    let g = flat_workgroup(wid, nwg);
    if (g >= row_blocks * col_blocks * out_batch) { return; }
    let m0 = (g / col_blocks) % row_blocks * 8u;
    let n0 = (g % col_blocks) * 4u * WG + lid;
    let bo = g / (row_blocks * col_blocks);
    let cols = vec4<u32>(n0, n0 + WG, n0 + 2u * WG, n0 + 3u * WG);
    let bc = min(cols, vec4<u32>(p.n - 1u)) * p.b_ns;
    let r0 = min(m0 + 0u, p.m - 1u) * p.a_ms;
    let r1 = min(m0 + 1u, p.m - 1u) * p.a_ms;
    let r2 = min(m0 + 2u, p.m - 1u) * p.a_ms;
    let r3 = min(m0 + 3u, p.m - 1u) * p.a_ms;
    let r4 = min(m0 + 4u, p.m - 1u) * p.a_ms;
    let r5 = min(m0 + 5u, p.m - 1u) * p.a_ms;
    let r6 = min(m0 + 6u, p.m - 1u) * p.a_ms;
    let r7 = min(m0 + 7u, p.m - 1u) * p.a_ms;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0);
    var c5 = vec4<f32>(0.0);
    var c6 = vec4<f32>(0.0);
    var c7 = vec4<f32>(0.0);
    let b_first = select(bo, 0u, p.reduce_batch != 0u);
    let b_last = select(bo + 1u, p.batch, p.reduce_batch != 0u);
    for (var bb = b_first; bb < b_last; bb++) {
        var ao = bb * p.a_bs;
        var bk = bb * p.b_bs;
        for (var k = 0u; k < p.k; k++) {
            let bv = vec4<f32>(b[bk + bc.x], b[bk + bc.y], b[bk + bc.z], b[bk + bc.w]);
            c0 += a[ao + r0] * bv;
            c1 += a[ao + r1] * bv;
            c2 += a[ao + r2] * bv;
            c3 += a[ao + r3] * bv;
            c4 += a[ao + r4] * bv;
            c5 += a[ao + r5] * bv;
            c6 += a[ao + r6] * bv;
            c7 += a[ao + r7] * bv;
            ao += p.a_ks;
            bk += p.b_ks;
        }
    }
    put_8_rows(bo, m0, cols, c0, c1, c2, c3, c4, c5, c6, c7);
}

// ---------------------------------------------------------------------------
// The CPU set's product where every operand can be read four floats at a
// time. On lavapipe a storage load costs about the same for a vec4 as for one
// float (each is a loop over the 8 lanes of a vector; BENCHMARKS.md, "What a
// load costs on lavapipe"), so this kernel reads A and B only as vec4s: per
// four steps of k, 8 loads of A and 4 of B feed 32 vec4 FMAs. Each
// invocation owns 8 rows x 4 consecutive columns of C.
//
// A is read along k (a_ks == 1) or along m (a_ms == 1); B along n in quads
// (b_ns == 1, rows in whole quads), along k (b_ks == 1), or along n by single
// floats where its rows do not start on quads (a 7x7 feature map's 49
// columns): the six entry points below, each the same loop with the layout
// fixed, so the compiler drops the other branches. Rust (Gemm::quads)
// checks that K, the strides and the other dimensions needed are multiples
// of 4, and that slices == 1. B is bound both as quads (b4) and as floats (b).
@group(0) @binding(6) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> b4: array<vec4<f32>>;

// Where an invocation's four columns n0..n0+4 of B are read from: along n,
// the quad at `along_n` (past N: the last quad); along k, each column's
// offset (past N: the last column).
struct BCols { along_n: u32, along_k: vec4<u32> }
fn b_cols(n0: u32) -> BCols {
    let last = p.n - 1u;
    let cols = min(vec4<u32>(n0, n0 + 1u, n0 + 2u, n0 + 3u), vec4<u32>(last)) * p.b_ns;
    return BCols(min(n0, p.n - 4u), cols);
}

// How B is read (b_quads).
const B_ALONG_N: u32 = 0u;
const B_ALONG_K: u32 = 1u;
const B_ALONG_N_FLOATS: u32 = 2u;

// B[k + kk, n0..n0+4] for kk in 0..4, from batch entry offset `base`.
struct BQuads { b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32> }
fn b_quads(base: u32, k: u32, at: BCols, b_mode: u32) -> BQuads {
    if (b_mode == B_ALONG_N) {
        let bt = base + k * p.b_ks + at.along_n;
        return BQuads(b4[bt / 4u], b4[(bt + p.b_ks) / 4u], b4[(bt + 2u * p.b_ks) / 4u], b4[(bt + 3u * p.b_ks) / 4u]);
    }
    if (b_mode == B_ALONG_N_FLOATS) {
        // b_ns == 1: along_k holds the (clamped) columns themselves.
        let c = at.along_k;
        let r0 = base + k * p.b_ks;
        let r1 = r0 + p.b_ks;
        let r2 = r1 + p.b_ks;
        let r3 = r2 + p.b_ks;
        return BQuads(vec4(b[r0 + c.x], b[r0 + c.y], b[r0 + c.z], b[r0 + c.w]),
                      vec4(b[r1 + c.x], b[r1 + c.y], b[r1 + c.z], b[r1 + c.w]),
                      vec4(b[r2 + c.x], b[r2 + c.y], b[r2 + c.z], b[r2 + c.w]),
                      vec4(b[r3 + c.x], b[r3 + c.y], b[r3 + c.z], b[r3 + c.w]));
    }
    let e0 = b4[(base + at.along_k.x + k) / 4u];
    let e1 = b4[(base + at.along_k.y + k) / 4u];
    let e2 = b4[(base + at.along_k.z + k) / 4u];
    let e3 = b4[(base + at.along_k.w + k) / 4u];
    return BQuads(vec4(e0.x, e1.x, e2.x, e3.x), vec4(e0.y, e1.y, e2.y, e3.y),
                  vec4(e0.z, e1.z, e2.z, e3.z), vec4(e0.w, e1.w, e2.w, e3.w));
}

// Everything below is written out row by row: on lavapipe a private array
// indexed in a loop that is not unrolled lives in memory, and its every
// access is a per-lane loop like a storage load.
fn matmul_quads(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, a_along_k: bool, b_mode: u32) {
    let row_blocks = (p.m + 7u) / 8u;
    let col_blocks = (p.n + 4u * WG - 1u) / (4u * WG);
    let out_batch = select(p.batch, 1u, p.reduce_batch != 0u);
    let g = flat_workgroup(wid, nwg);
    if (g >= row_blocks * col_blocks * out_batch) { return; }
    let m0 = (g / col_blocks) % row_blocks * 8u;
    let n0 = ((g % col_blocks) * WG + lid) * 4u;
    let bo = g / (row_blocks * col_blocks);
    // A along k: the offsets of rows m0..m0+8 (past M: the last row).
    let last = p.m - 1u;
    let r0 = min(m0, last) * p.a_ms;
    let r1 = min(m0 + 1u, last) * p.a_ms;
    let r2 = min(m0 + 2u, last) * p.a_ms;
    let r3 = min(m0 + 3u, last) * p.a_ms;
    let r4 = min(m0 + 4u, last) * p.a_ms;
    let r5 = min(m0 + 5u, last) * p.a_ms;
    let r6 = min(m0 + 6u, last) * p.a_ms;
    let r7 = min(m0 + 7u, last) * p.a_ms;
    // A along m: rows m0..m0+4 and m0+4..m0+8 (past M: the last quad).
    let m_hi = min(m0 + 4u, p.m - 4u);
    let bc = b_cols(n0);
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0);
    var c5 = vec4<f32>(0.0);
    var c6 = vec4<f32>(0.0);
    var c7 = vec4<f32>(0.0);
    let b_first = select(bo, 0u, p.reduce_batch != 0u);
    let b_last = select(bo + 1u, p.batch, p.reduce_batch != 0u);
    for (var bb = b_first; bb < b_last; bb++) {
        let ab = bb * p.a_bs;
        let bbase = bb * p.b_bs;
        for (var k = 0u; k < p.k; k += 4u) {
            // a_i = A[m0 + i, k..k+4]
            var a0: vec4<f32>; var a1: vec4<f32>; var a2: vec4<f32>; var a3: vec4<f32>;
            var a4_: vec4<f32>; var a5: vec4<f32>; var a6: vec4<f32>; var a7: vec4<f32>;
            if (a_along_k) {
                a0 = a4[(ab + r0 + k) / 4u]; a1 = a4[(ab + r1 + k) / 4u];
                a2 = a4[(ab + r2 + k) / 4u]; a3 = a4[(ab + r3 + k) / 4u];
                a4_ = a4[(ab + r4 + k) / 4u]; a5 = a4[(ab + r5 + k) / 4u];
                a6 = a4[(ab + r6 + k) / 4u]; a7 = a4[(ab + r7 + k) / 4u];
            } else {
                let at = ab + k * p.a_ks;
                let l0 = a4[(at + m0) / 4u];
                let h0 = a4[(at + m_hi) / 4u];
                let l1 = a4[(at + p.a_ks + m0) / 4u];
                let h1 = a4[(at + p.a_ks + m_hi) / 4u];
                let l2 = a4[(at + 2u * p.a_ks + m0) / 4u];
                let h2 = a4[(at + 2u * p.a_ks + m_hi) / 4u];
                let l3 = a4[(at + 3u * p.a_ks + m0) / 4u];
                let h3 = a4[(at + 3u * p.a_ks + m_hi) / 4u];
                a0 = vec4(l0.x, l1.x, l2.x, l3.x); a1 = vec4(l0.y, l1.y, l2.y, l3.y);
                a2 = vec4(l0.z, l1.z, l2.z, l3.z); a3 = vec4(l0.w, l1.w, l2.w, l3.w);
                a4_ = vec4(h0.x, h1.x, h2.x, h3.x); a5 = vec4(h0.y, h1.y, h2.y, h3.y);
                a6 = vec4(h0.z, h1.z, h2.z, h3.z); a7 = vec4(h0.w, h1.w, h2.w, h3.w);
            }
            let b = b_quads(bbase, k, bc, b_mode);
            let b0 = b.b0;
            let b1 = b.b1;
            let b2 = b.b2;
            let b3 = b.b3;
            c0 += a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
            c1 += a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
            c2 += a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
            c3 += a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
            c4 += a4_.x * b0 + a4_.y * b1 + a4_.z * b2 + a4_.w * b3;
            c5 += a5.x * b0 + a5.y * b1 + a5.z * b2 + a5.w * b3;
            c6 += a6.x * b0 + a6.y * b1 + a6.z * b2 + a6.w * b3;
            c7 += a7.x * b0 + a7.y * b1 + a7.z * b2 + a7.w * b3;
        }
    }
    let cols = vec4<u32>(n0, n0 + 1u, n0 + 2u, n0 + 3u);
    put_8_rows(bo, m0, cols, c0, c1, c2, c3, c4, c5, c6, c7);
}

@compute @workgroup_size(WG)
fn matmul_quads_ak_bn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    matmul_quads(wid, nwg, lid, true, B_ALONG_N);
}
@compute @workgroup_size(WG)
fn matmul_quads_am_bn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    matmul_quads(wid, nwg, lid, false, B_ALONG_N);
}
@compute @workgroup_size(WG)
fn matmul_quads_ak_bk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    matmul_quads(wid, nwg, lid, true, B_ALONG_K);
}
@compute @workgroup_size(WG)
fn matmul_quads_am_bk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    matmul_quads(wid, nwg, lid, false, B_ALONG_K);
}
@compute @workgroup_size(WG)
fn matmul_quads_ak_bf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    matmul_quads(wid, nwg, lid, true, B_ALONG_N_FLOATS);
}
@compute @workgroup_size(WG)
fn matmul_quads_am_bf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    matmul_quads(wid, nwg, lid, false, B_ALONG_N_FLOATS);
}
