// Direct grouped 2-D convolution, NCHW, weights [Cout, Cin/groups, KH, KW].
// groups = 1 is an ordinary convolution, groups = C a depthwise one. The
// 1x1 stride-1 case takes the matmul path instead (src/kernels/conv2d.rs);
// this kernel is the general one and the slow-but-obvious twin of that path.
// No atomics: each thread owns one output element in every direction.

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32,
    kh: u32, kw: u32, stride: u32, pad: u32, groups: u32,
    has_bias: u32,
    // Weight gradients: the (n, oy) output rows are cut into `slices`
    // slices of `rows_per_slice`; with more than one, `dw` holds one partial
    // gradient per slice, summed by reduce.wgsl's sum_slices.
    slices: u32, rows_per_slice: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;

// One thread per output element (n, co, oy, ox).
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.cout * p.ho * p.wo) { return; }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let co = (i / (p.wo * p.ho)) % p.cout;
    let n = i / (p.wo * p.ho * p.cout);
    let cin_g = p.cin / p.groups;
    let g = co / (p.cout / p.groups);
    var acc = 0.0;
    for (var ci = 0u; ci < cin_g; ci++) {
        let xbase = (n * p.cin + g * cin_g + ci) * p.h * p.w;
        let wbase = (co * cin_g + ci) * p.kh * p.kw;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad);
            if (iy < 0 || iy >= i32(p.h)) { continue; }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                if (ix < 0 || ix >= i32(p.w)) { continue; }
                acc += x[xbase + u32(iy) * p.w + u32(ix)] * wt[wbase + ky * p.kw + kx];
            }
        }
    }
    if (p.has_bias != 0u) { acc += bias[co]; }
    y[i] = acc;
}

// One thread per input element: gathers every output that read it.
@compute @workgroup_size(WG)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.cin * p.h * p.w) { return; }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let c = (i / (p.w * p.h)) % p.cin;
    let n = i / (p.w * p.h * p.cin);
    let cin_g = p.cin / p.groups;
    let cout_g = p.cout / p.groups;
    let g = c / cin_g;
    let ci = c % cin_g;
    var acc = 0.0;
    for (var j = 0u; j < cout_g; j++) {
        let co = g * cout_g + j;
        let dybase = (n * p.cout + co) * p.ho * p.wo;
        let wbase = (co * cin_g + ci) * p.kh * p.kw;
        for (var ky = 0u; ky < p.kh; ky++) {
            let ty = i32(iy + p.pad) - i32(ky);
            if (ty < 0 || ty % i32(p.stride) != 0) { continue; }
            let oy = u32(ty) / p.stride;
            if (oy >= p.ho) { continue; }
            for (var kx = 0u; kx < p.kw; kx++) {
                let tx = i32(ix + p.pad) - i32(kx);
                if (tx < 0 || tx % i32(p.stride) != 0) { continue; }
                let ox = u32(tx) / p.stride;
                if (ox >= p.wo) { continue; }
                acc += dy[dybase + oy * p.wo + ox] * wt[wbase + ky * p.kw + kx];
            }
        }
    }
    dx[i] = acc;
}

// The output rows [first, last) of a weight-gradient slice, and where the
// first starts as (n, oy).
struct Rows { first: u32, last: u32, n: u32, oy: u32 }
fn slice_rows(slice: u32) -> Rows {
    let first = slice * p.rows_per_slice;
    let last = min(first + p.rows_per_slice, p.n * p.ho);
    return Rows(first, last, first / p.ho, first % p.ho);
}

// backward_input for stride 1: every tap of the window lands on an output,
// so no stride test (an integer modulo per tap, which lavapipe cannot
// vectorise) and no division.
@compute @workgroup_size(WG)
fn backward_input_s1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.cin * p.h * p.w) { return; }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let c = (i / (p.w * p.h)) % p.cin;
    let n = i / (p.w * p.h * p.cin);
    let cin_g = p.cin / p.groups;
    let cout_g = p.cout / p.groups;
    let g = c / cin_g;
    let ci = c % cin_g;
    var acc = 0.0;
    for (var j = 0u; j < cout_g; j++) {
        let co = g * cout_g + j;
        let dybase = (n * p.cout + co) * p.ho * p.wo;
        let wbase = (co * cin_g + ci) * p.kh * p.kw;
        for (var ky = 0u; ky < p.kh; ky++) {
            let oy = i32(iy + p.pad) - i32(ky);
            if (oy < 0 || oy >= i32(p.ho)) { continue; }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ox = i32(ix + p.pad) - i32(kx);
                if (ox < 0 || ox >= i32(p.wo)) { continue; }
                acc += dy[dybase + u32(oy) * p.wo + u32(ox)] * wt[wbase + ky * p.kw + kx];
            }
        }
    }
    dx[i] = acc;
}

// One thread per weight element (co, ci, ky, kx) and slice: reduces over
// the slice's (n, oy) rows and every ox.
@compute @workgroup_size(WG)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let cin_g = p.cin / p.groups;
    let weights = p.cout * cin_g * p.kh * p.kw;
    let t = flat_thread(wid, nwg, lid);
    if (t >= weights * p.slices) { return; }
    let slice = t / weights;
    let i = t - slice * weights;
    let kx = i % p.kw;
    let ky = (i / p.kw) % p.kh;
    let ci = (i / (p.kw * p.kh)) % cin_g;
    let co = i / (p.kw * p.kh * cin_g);
    let c = (co / (p.cout / p.groups)) * cin_g + ci;
    // Output rows/cols whose window reaches inside the input at this tap.
    var acc = 0.0;
    let rows = slice_rows(slice);
    var n = rows.n;
    var oy = rows.oy;
    for (var r = rows.first; r < rows.last; r++) {
        let iy = i32(oy * p.stride + ky) - i32(p.pad);
        if (iy >= 0 && iy < i32(p.h)) {
            let xrow = ((n * p.cin + c) * p.h + u32(iy)) * p.w;
            let dyrow = ((n * p.cout + co) * p.ho + oy) * p.wo;
            for (var ox = 0u; ox < p.wo; ox++) {
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                if (ix < 0 || ix >= i32(p.w)) { continue; }
                acc += dy[dyrow + ox] * x[xrow + u32(ix)];
            }
        }
        oy++;
        if (oy == p.ho) { oy = 0u; n++; }
    }
    dw[t] = acc;
}

// ---------------------------------------------------------------------------
// Blocked variants, chosen when the channels of a group come in fours
// (src/kernels/conv2d.rs: Path::Blocked). Each invocation produces 4 channels
// of one pixel, so every activation it loads feeds 4 multiply-adds, its
// weight loads are the same for all invocations of a row (a broadcast), and
// the index arithmetic is shared by 4 outputs. Same bindings and Params.

// y[n, co0..co0+3, oy, ox]; cout / groups is a multiple of 4.
@compute @workgroup_size(WG)
fn forward_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    let blocks = p.cout / 4u;
    if (i >= p.n * blocks * p.ho * p.wo) { return; }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let co0 = (i / (p.wo * p.ho)) % blocks * 4u;
    let n = i / (p.wo * p.ho * blocks);
    let cin_g = p.cin / p.groups;
    let g = co0 / (p.cout / p.groups);
    let kk = p.kh * p.kw;
    let wstride = cin_g * kk; // between consecutive output channels
    var acc = vec4<f32>(0.0);
    for (var ci = 0u; ci < cin_g; ci++) {
        let xbase = (n * p.cin + g * cin_g + ci) * p.h * p.w;
        let wbase = (co0 * cin_g + ci) * kk;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad);
            if (iy < 0 || iy >= i32(p.h)) { continue; }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                if (ix < 0 || ix >= i32(p.w)) { continue; }
                let v = x[xbase + u32(iy) * p.w + u32(ix)];
                let t = wbase + ky * p.kw + kx;
                acc += v * vec4<f32>(wt[t], wt[t + wstride], wt[t + 2u * wstride], wt[t + 3u * wstride]);
            }
        }
    }
    if (p.has_bias != 0u) { acc += vec4<f32>(bias[co0], bias[co0 + 1u], bias[co0 + 2u], bias[co0 + 3u]); }
    let plane = p.ho * p.wo;
    let o = ((n * p.cout + co0) * p.ho + oy) * p.wo + ox;
    y[o] = acc.x;
    y[o + plane] = acc.y;
    y[o + 2u * plane] = acc.z;
    y[o + 3u * plane] = acc.w;
}

// dx[n, c0..c0+3, iy, ix]; cin / groups is a multiple of 4.
@compute @workgroup_size(WG)
fn backward_input_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    let blocks = p.cin / 4u;
    if (i >= p.n * blocks * p.h * p.w) { return; }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let c0 = (i / (p.w * p.h)) % blocks * 4u;
    let n = i / (p.w * p.h * blocks);
    let cin_g = p.cin / p.groups;
    let cout_g = p.cout / p.groups;
    let g = c0 / cin_g;
    let ci0 = c0 % cin_g;
    let kk = p.kh * p.kw;
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < cout_g; j++) {
        let co = g * cout_g + j;
        let dybase = (n * p.cout + co) * p.ho * p.wo;
        let wbase = (co * cin_g + ci0) * kk;
        for (var ky = 0u; ky < p.kh; ky++) {
            let ty = i32(iy + p.pad) - i32(ky);
            if (ty < 0 || ty % i32(p.stride) != 0) { continue; }
            let oy = u32(ty) / p.stride;
            if (oy >= p.ho) { continue; }
            for (var kx = 0u; kx < p.kw; kx++) {
                let tx = i32(ix + p.pad) - i32(kx);
                if (tx < 0 || tx % i32(p.stride) != 0) { continue; }
                let ox = u32(tx) / p.stride;
                if (ox >= p.wo) { continue; }
                let d = dy[dybase + oy * p.wo + ox];
                let t = wbase + ky * p.kw + kx;
                acc += d * vec4<f32>(wt[t], wt[t + kk], wt[t + 2u * kk], wt[t + 3u * kk]);
            }
        }
    }
    let plane = p.h * p.w;
    let o = ((n * p.cin + c0) * p.h + iy) * p.w + ix;
    dx[o] = acc.x;
    dx[o + plane] = acc.y;
    dx[o + 2u * plane] = acc.z;
    dx[o + 3u * plane] = acc.w;
}

// dw[co, ci, ky, 0..kw] for kernels at most 3 wide: one invocation per
// (co, ci, ky) row owns its taps in three scalar accumulators, so each dy it
// loads feeds up to 3 multiply-adds. (A private array<f32, 9> indexed by the
// tap gave wrong sums on lavapipe beyond a few thousand iterations.)
@compute @workgroup_size(WG)
fn backward_weight_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let cin_g = p.cin / p.groups;
    let tap_rows = p.cout * cin_g * p.kh;
    let t = flat_thread(wid, nwg, lid);
    if (t >= tap_rows * p.slices) { return; }
    let slice = t / tap_rows;
    let i = t - slice * tap_rows;
    let ky = i % p.kh;
    let ci = (i / p.kh) % cin_g;
    let co = i / (p.kh * cin_g);
    let c = (co / (p.cout / p.groups)) * cin_g + ci;
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    let rows = slice_rows(slice);
    var n = rows.n;
    var oy = rows.oy;
    for (var r = rows.first; r < rows.last; r++) {
        let iy = i32(oy * p.stride + ky) - i32(p.pad);
        if (iy >= 0 && iy < i32(p.h)) {
            let row = ((n * p.cin + c) * p.h + u32(iy)) * p.w;
            let dyrow = ((n * p.cout + co) * p.ho + oy) * p.wo;
            for (var ox = 0u; ox < p.wo; ox++) {
                let d = dy[dyrow + ox];
                let ix = i32(ox * p.stride) - i32(p.pad);
                if (ix >= 0 && ix < i32(p.w)) { a0 += d * x[row + u32(ix)]; }
                if (p.kw > 1u && ix + 1 >= 0 && ix + 1 < i32(p.w)) { a1 += d * x[row + u32(ix + 1)]; }
                if (p.kw > 2u && ix + 2 >= 0 && ix + 2 < i32(p.w)) { a2 += d * x[row + u32(ix + 2)]; }
            }
        }
        oy++;
        if (oy == p.ho) { oy = 0u; n++; }
    }
    let o = t * p.kw;
    dw[o] = a0;
    if (p.kw > 1u) { dw[o + 1u] = a1; }
    if (p.kw > 2u) { dw[o + 2u] = a2; }
}
