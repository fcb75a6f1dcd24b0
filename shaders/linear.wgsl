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

struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    a_bs: u32, a_ms: u32, a_ks: u32,
    b_bs: u32, b_ks: u32, b_ns: u32,
    c_bs: u32, c_ms: u32, c_ns: u32,
    bias_mode: u32,      // 0 none, 1 bias[n] (linear), 2 bias[m] (conv channel)
    accumulate: u32,     // 1: C += result
    reduce_batch: u32,   // 1: sum over the batch into one C
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let t = flat_thread(wid, nwg, lid);
    let tiles_m = (p.m + 3u) / 4u;
    let tiles_n = (p.n + 3u) / 4u;
    let out_batch = select(p.batch, 1u, p.reduce_batch != 0u);
    if (t >= tiles_m * tiles_n * out_batch) { return; }
    // Rows m0..m0+3 are consecutive; columns are strided by tiles_n
    // (tn, tn + tiles_n, ...), so neighbouring threads own neighbouring
    // columns and their loads of B (and stores of C) are contiguous, while
    // they share the same rows of A (a broadcast).
    let m0 = (t / tiles_n) % tiles_m * 4u;
    let tn = t % tiles_n;
    let bo = t / (tiles_m * tiles_n);
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
    let b_first = select(bo, 0u, p.reduce_batch != 0u);
    let b_last = select(bo + 1u, p.batch, p.reduce_batch != 0u);
    for (var bb = b_first; bb < b_last; bb++) {
        var ao = bb * p.a_bs;
        var bo_ = bb * p.b_bs;
        for (var k = 0u; k < p.k; k++) {
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
            var v = rows[i][j];
            if (p.bias_mode == 1u) { v += bias[nj]; }
            if (p.bias_mode == 2u) { v += bias[mi]; }
            let ci = bo * p.c_bs + mi * p.c_ms + nj * p.c_ns;
            if (p.accumulate != 0u) { v += c[ci]; }
            c[ci] = v;
        }
    }
}
