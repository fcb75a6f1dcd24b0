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
    // The forward pass's epilogue after the bias: the activation
    // (common.wgsl: epilogue_act; PReLU's slope per output channel), then
    // with `accumulate` the value y held before (a skip tensor copied in).
    act: u32, accumulate: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
@group(0) @binding(8) var<storage, read> slope: array<f32>;

// PReLU's slope for output channel c (unused by the other activations).
fn channel_slope(c: u32) -> f32 {
    if (p.act == 1u) { return slope[c]; }
    return 0.0;
}

// Output i of a forward pass holding `v`: the epilogue (`k`: its channel's
// slope), stored.
fn put_y(i: u32, v: f32, k: f32) {
    var out = epilogue_act(p.act, v, k);
    if (p.accumulate != 0u) { out += y[i]; }
    y[i] = out;
}

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
    put_y(i, acc, channel_slope(co));
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
    put_y(o, acc.x, channel_slope(co0));
    put_y(o + plane, acc.y, channel_slope(co0 + 1u));
    put_y(o + 2u * plane, acc.z, channel_slope(co0 + 2u));
    put_y(o + 3u * plane, acc.w, channel_slope(co0 + 3u));
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

// ---------------------------------------------------------------------------
// The CPU set's depthwise 3x3 with padding 1: one invocation per output row,
// walking it four outputs at a time with the window's columns carried from
// one step to the next, so that each input value is loaded once per tap row
// and the 9 weights once per row (the direct kernel loads 9 inputs and 9
// weights per output; on lavapipe every load is a loop over the lanes).
// Forward at stride 1 or 2, and the stride-1 input gradient, which is the
// same correlation of dy with the kernel turned by 180 degrees (the stride-2
// input gradient, `depthwise_rows_input_s2`, follows).
// Loop bounds and column tests depend only on the row's width, so all lanes
// take the same branches.

fn dw_src(at: u32, from_dy: bool) -> f32 {
    if (from_dy) { return dy[at]; }
    return x[at];
}

// Column `col` of a source row starting at `base` (0 past the right edge).
fn dw_col(base: u32, col: u32, width: u32, from_dy: bool) -> f32 {
    return select(0.0, dw_src(base + min(col, width - 1u), from_dy), col < width);
}

struct DwStep { o: vec4<f32>, carry: vec2<f32> }

// Stride 1: columns ox0-1, ox0 come in `carry`, ox0+1..ox0+4 are loaded.
fn dw_row_s1(base: u32, ox0: u32, width: u32, k: vec3<f32>, carry: vec2<f32>, from_dy: bool) -> DwStep {
    let v0 = carry.x;
    let v1 = carry.y;
    let v2 = dw_col(base, ox0 + 1u, width, from_dy);
    let v3 = dw_col(base, ox0 + 2u, width, from_dy);
    let v4 = dw_col(base, ox0 + 3u, width, from_dy);
    let v5 = dw_col(base, ox0 + 4u, width, from_dy);
    let o = vec4<f32>(dot(k, vec3(v0, v1, v2)), dot(k, vec3(v1, v2, v3)), dot(k, vec3(v2, v3, v4)),
                      dot(k, vec3(v3, v4, v5)));
    return DwStep(o, vec2(v4, v5));
}

// Stride 2: column 2*ox0-1 comes in `carry.y`, 2*ox0..2*ox0+7 are loaded.
fn dw_row_s2(base: u32, ox0: u32, width: u32, k: vec3<f32>, carry: vec2<f32>, from_dy: bool) -> DwStep {
    let c = 2u * ox0;
    let v0 = carry.y;
    let v1 = dw_col(base, c, width, from_dy);
    let v2 = dw_col(base, c + 1u, width, from_dy);
    let v3 = dw_col(base, c + 2u, width, from_dy);
    let v4 = dw_col(base, c + 3u, width, from_dy);
    let v5 = dw_col(base, c + 4u, width, from_dy);
    let v6 = dw_col(base, c + 5u, width, from_dy);
    let v7 = dw_col(base, c + 6u, width, from_dy);
    let v8 = dw_col(base, c + 7u, width, from_dy);
    let o = vec4<f32>(dot(k, vec3(v0, v1, v2)), dot(k, vec3(v2, v3, v4)), dot(k, vec3(v4, v5, v6)),
                      dot(k, vec3(v6, v7, v8)));
    return DwStep(o, vec2(0.0, v8));
}

fn dw_rows(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, stride2: bool, backward: bool) {
    // forward: x (h, w) -> y (ho, wo); backward: dy (ho, wo) -> dx (h, w)
    let src_h = select(p.h, p.ho, backward);
    let src_w = select(p.w, p.wo, backward);
    let out_h = select(p.ho, p.h, backward);
    let out_w = select(p.wo, p.w, backward);
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.cout * out_h) { return; }
    let plane = i / out_h;
    let oy = i % out_h;
    let c = plane % p.cout;
    let wb = c * 9u;
    var k0: vec3<f32>;
    var k1: vec3<f32>;
    var k2: vec3<f32>;
    if (backward) {
        k0 = vec3(wt[wb + 8u], wt[wb + 7u], wt[wb + 6u]);
        k1 = vec3(wt[wb + 5u], wt[wb + 4u], wt[wb + 3u]);
        k2 = vec3(wt[wb + 2u], wt[wb + 1u], wt[wb]);
    } else {
        k0 = vec3(wt[wb], wt[wb + 1u], wt[wb + 2u]);
        k1 = vec3(wt[wb + 3u], wt[wb + 4u], wt[wb + 5u]);
        k2 = vec3(wt[wb + 6u], wt[wb + 7u], wt[wb + 8u]);
    }
    // Source rows s*oy-1 .. s*oy+1; one outside the image contributes 0
    // (its weights are zeroed and a valid row is read instead).
    let s = select(1u, 2u, stride2);
    let top = i32(s * oy) - 1;
    let plane_base = plane * src_h * src_w;
    let y0 = top;
    let y1 = top + 1;
    let y2 = top + 2;
    let last = i32(src_h) - 1;
    let b0 = plane_base + u32(clamp(y0, 0, last)) * src_w;
    let b1 = plane_base + u32(clamp(y1, 0, last)) * src_w;
    let b2 = plane_base + u32(clamp(y2, 0, last)) * src_w;
    k0 = select(vec3(0.0), k0, y0 >= 0 && y0 <= last);
    k1 = select(vec3(0.0), k1, y1 >= 0 && y1 <= last);
    k2 = select(vec3(0.0), k2, y2 >= 0 && y2 <= last);
    // Column -1 is padding; stride 1 also carries column 0.
    var c0 = vec2(0.0, 0.0);
    var c1 = vec2(0.0, 0.0);
    var c2 = vec2(0.0, 0.0);
    if (!stride2) {
        c0.y = dw_src(b0, backward);
        c1.y = dw_src(b1, backward);
        c2.y = dw_src(b2, backward);
    }
    let out_base = plane * out_h * out_w + oy * out_w;
    var bias_c = 0.0;
    if (!backward && p.has_bias != 0u) { bias_c = bias[c]; }
    var slope_c = 0.0;
    if (!backward) { slope_c = channel_slope(c); }
    for (var ox0 = 0u; ox0 < out_w; ox0 += 4u) {
        var r0: DwStep;
        var r1: DwStep;
        var r2: DwStep;
        if (stride2) {
            r0 = dw_row_s2(b0, ox0, src_w, k0, c0, backward);
            r1 = dw_row_s2(b1, ox0, src_w, k1, c1, backward);
            r2 = dw_row_s2(b2, ox0, src_w, k2, c2, backward);
        } else {
            r0 = dw_row_s1(b0, ox0, src_w, k0, c0, backward);
            r1 = dw_row_s1(b1, ox0, src_w, k1, c1, backward);
            r2 = dw_row_s1(b2, ox0, src_w, k2, c2, backward);
        }
        c0 = r0.carry;
        c1 = r1.carry;
        c2 = r2.carry;
        let o = r0.o + r1.o + r2.o + bias_c;
        for (var j = 0u; j < 4u; j++) {
            if (ox0 + j < out_w) {
                if (backward) { dx[out_base + ox0 + j] = o[j]; } else { put_y(out_base + ox0 + j, o[j], slope_c); }
            }
        }
    }
}

@compute @workgroup_size(WG)
fn depthwise_rows_s1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    dw_rows(wid, nwg, lid, false, false);
}
@compute @workgroup_size(WG)
fn depthwise_rows_s2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    dw_rows(wid, nwg, lid, true, false);
}
@compute @workgroup_size(WG)
fn depthwise_rows_input_s1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    dw_rows(wid, nwg, lid, false, true);
}

// The stride-2 input gradient, by rows of dx. Row iy draws on dy row iy/2
// through the kernel's middle row when iy is even, and on rows (iy+1)/2 and
// (iy-1)/2 through its top and bottom rows when it is odd; the parity picks
// weights (zero where a row is not used or out of range) rather than
// branches, as neighbouring lanes hold rows of both parities. Along the row
// the same holds per column: four dx columns from 3 dy columns, one carried.
@compute @workgroup_size(WG)
fn depthwise_rows_input_s2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.cin * p.h) { return; }
    let plane = i / p.h;
    let iy = i % p.h;
    let c = plane % p.cin;
    let wb = c * 9u;
    let odd = (iy & 1u) == 1u;
    let top = vec3(wt[wb], wt[wb + 1u], wt[wb + 2u]);
    let mid = vec3(wt[wb + 3u], wt[wb + 4u], wt[wb + 5u]);
    let bot = vec3(wt[wb + 6u], wt[wb + 7u], wt[wb + 8u]);
    // Source rows: a = (iy+1)/2 through `top` if odd, iy/2 through `mid` if
    // even; b = (iy-1)/2 through `bot` if odd, unused if even.
    let ya = select(iy / 2u, (iy + 1u) / 2u, odd);
    let yb = select(0u, (iy - 1u) / 2u, odd);
    let ka = select(select(mid, top, odd), vec3(0.0), ya >= p.ho);
    let kb = select(select(vec3(0.0), bot, odd), vec3(0.0), yb >= p.ho);
    let base = plane * p.ho * p.wo;
    let ra = base + min(ya, p.ho - 1u) * p.wo;
    let rb = base + min(yb, p.ho - 1u) * p.wo;
    // u0 = dy column ix0/2 of each source row, carried from step to step.
    var ua = dw_col(ra, 0u, p.wo, true);
    var ub = dw_col(rb, 0u, p.wo, true);
    let out_base = plane * p.h * p.w + iy * p.w;
    for (var ix0 = 0u; ix0 < p.w; ix0 += 4u) {
        let h = ix0 / 2u;
        let a1 = dw_col(ra, h + 1u, p.wo, true);
        let a2 = dw_col(ra, h + 2u, p.wo, true);
        let b1 = dw_col(rb, h + 1u, p.wo, true);
        let b2 = dw_col(rb, h + 2u, p.wo, true);
        let o = vec4<f32>(ua * ka.y, a1 * ka.x + ua * ka.z, a1 * ka.y, a2 * ka.x + a1 * ka.z)
              + vec4<f32>(ub * kb.y, b1 * kb.x + ub * kb.z, b1 * kb.y, b2 * kb.x + b1 * kb.z);
        ua = a2;
        ub = b2;
        for (var j = 0u; j < 4u; j++) {
            if (ix0 + j < p.w) { dx[out_base + ix0 + j] = o[j]; }
        }
    }
}

// ---------------------------------------------------------------- im2col
// Convolutions with few taps per output (the stem: 3 channels x 3x3) as a
// matrix product (src/kernels/conv2d/im2col.rs). Their direct kernels run
// 27 multiply-adds per output and load a weight for each; as a product the
// weights are broadcast rows of A and the taps a contiguous K.

// cols[n][kk][oy * wo + ox] = x[n][ci][oy*s + ky - pad][ox*s + kx - pad],
// 0 outside the image, kk = (ci * kh + ky) * kw + kx, with kk padded by zero
// rows to a multiple of 4 (the product reads K in quads). One invocation
// per row of cols (n, kk, oy): the index arithmetic runs once per row.
// Written to `y`; one group only.
@compute @workgroup_size(WG)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let taps = p.cin * p.kh * p.kw;
    let kp = (taps + 3u) & ~3u;
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * kp * p.ho) { return; }
    let oy = i % p.ho;
    let row = i / p.ho;
    let kk = row % kp;
    let n = row / kp;
    let kx = kk % p.kw;
    let ky = (kk / p.kw) % p.kh;
    let ci = min(kk / (p.kw * p.kh), p.cin - 1u);
    let iy = i32(oy * p.stride + ky) - i32(p.pad);
    let row_ok = kk < taps && iy >= 0 && iy < i32(p.h);
    let in_base = (n * p.cin + ci) * p.h * p.w + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w;
    let out_base = (row * p.ho + oy) * p.wo;
    let last = i32(p.w) - 1;
    for (var ox = 0u; ox < p.wo; ox++) {
        let ix = i32(ox * p.stride + kx) - i32(p.pad);
        let v = x[in_base + u32(clamp(ix, 0, last))];
        y[out_base + ox] = select(0.0, v, row_ok && ix >= 0 && ix <= last);
    }
}

// The weight [cout, taps] as [cout, kp], zero columns past `taps`, into `y`.
@compute @workgroup_size(WG)
fn pad_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let taps = p.cin * p.kh * p.kw;
    let kp = (taps + 3u) & ~3u;
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.cout * kp) { return; }
    let kk = i % kp;
    y[i] = select(0.0, wt[(i / kp) * taps + min(kk, taps - 1u)], kk < taps);
}

// dx from the gradient of the im2col matrix (bound as `dy`): each input
// element sums the entries of cols it was copied to. One invocation per row
// of dx (n, ci, iy); `stride1` drops the divisions by the stride.
fn col2im_rows(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, stride1: bool) {
    let taps = p.cin * p.kh * p.kw;
    let kp = (taps + 3u) & ~3u;
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.cin * p.h) { return; }
    let iy = i % p.h;
    let plane = i / p.h;
    let ci = plane % p.cin;
    let n = plane / p.cin;
    let hwo = p.ho * p.wo;
    let s = i32(p.stride);
    let out_base = plane * p.h * p.w + iy * p.w;
    for (var ix = 0u; ix < p.w; ix++) {
        var acc = 0.0;
        for (var ky = 0u; ky < p.kh; ky++) {
            let ty = i32(iy + p.pad) - i32(ky);
            let oy = select(ty / s, ty, stride1);
            let y_ok = ty >= 0 && oy * s == ty && oy < i32(p.ho);
            let row = (n * kp + (ci * p.kh + ky) * p.kw) * hwo + u32(clamp(oy, 0, i32(p.ho) - 1)) * p.wo;
            for (var kx = 0u; kx < p.kw; kx++) {
                let tx = i32(ix + p.pad) - i32(kx);
                let ox = select(tx / s, tx, stride1);
                let v = dy[row + kx * hwo + u32(clamp(ox, 0, i32(p.wo) - 1))];
                acc += select(0.0, v, y_ok && tx >= 0 && ox * s == tx && ox < i32(p.wo));
            }
        }
        dx[out_base + ix] = acc;
    }
}

@compute @workgroup_size(WG)
fn col2im_s1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    col2im_rows(wid, nwg, lid, true);
}
@compute @workgroup_size(WG)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    col2im_rows(wid, nwg, lid, false);
}

// ------------------------------------------ depthwise 3x3 weight gradient
// The CPU set's depthwise 3x3 (padding 1) weight gradient: one invocation
// per (image, channel) plane walks its output rows four outputs at a time,
// carrying the input window's columns, and adds all 9 taps; `dw` gets one
// partial gradient per image ([n, c * 9]), summed by reduce.wgsl's
// sum_slices. Per four outputs and 36 multiply-adds it loads 4 of dy and
// 12 (stride 1) or 24 (stride 2) of x, where the per-tap kernel loads 48.

// x of a row (base of the clamped row) at `col`; 0 past the row's end or
// where the row lies outside the image.
fn dwg_x(base: u32, col: u32, row_ok: bool) -> f32 {
    return select(0.0, dw_col(base, col, p.w, false), row_ok);
}

// dy of row `base` at columns ox0..ox0+4, 0 past the row's end.
fn dwg_dy(base: u32, ox0: u32) -> vec4<f32> {
    return vec4(dw_col(base, ox0, p.wo, true), dw_col(base, ox0 + 1u, p.wo, true),
                dw_col(base, ox0 + 2u, p.wo, true), dw_col(base, ox0 + 3u, p.wo, true));
}

// One kernel row's three taps over four outputs, and the columns to carry.
struct DwgStep { taps: vec3<f32>, carry: vec2<f32> }

// Stride 1: outputs ox0..ox0+4 read columns ox0-1..ox0+4; the first two are
// carried from the previous step.
fn dwg_row_s1(base: u32, ox0: u32, ok: bool, d: vec4<f32>, carry: vec2<f32>) -> DwgStep {
    let v2 = dwg_x(base, ox0 + 1u, ok);
    let v3 = dwg_x(base, ox0 + 2u, ok);
    let v4 = dwg_x(base, ox0 + 3u, ok);
    let v5 = dwg_x(base, ox0 + 4u, ok);
    let t = vec3(dot(d, vec4(carry.x, carry.y, v2, v3)),
                 dot(d, vec4(carry.y, v2, v3, v4)),
                 dot(d, vec4(v2, v3, v4, v5)));
    return DwgStep(t, vec2(v4, v5));
}

// Stride 2: outputs ox0..ox0+4 read columns 2*ox0-1..2*ox0+7; the first is
// carried.
fn dwg_row_s2(base: u32, ox0: u32, ok: bool, d: vec4<f32>, carry: f32) -> DwgStep {
    let c = 2u * ox0;
    let v1 = dwg_x(base, c, ok);
    let v2 = dwg_x(base, c + 1u, ok);
    let v3 = dwg_x(base, c + 2u, ok);
    let v4 = dwg_x(base, c + 3u, ok);
    let v5 = dwg_x(base, c + 4u, ok);
    let v6 = dwg_x(base, c + 5u, ok);
    let v7 = dwg_x(base, c + 6u, ok);
    let v8 = dwg_x(base, c + 7u, ok);
    let t = vec3(dot(d, vec4(carry, v2, v4, v6)),
                 dot(d, vec4(v1, v3, v5, v7)),
                 dot(d, vec4(v2, v4, v6, v8)));
    return DwgStep(t, vec2(v8, 0.0));
}

fn depthwise_weight_rows(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, stride2: bool) {
    let plane = flat_thread(wid, nwg, lid);
    if (plane >= p.n * p.cout) { return; }
    let s = select(1u, 2u, stride2);
    let last = i32(p.h) - 1;
    let x_plane = plane * p.h * p.w;
    var t0 = vec3(0.0);
    var t1 = vec3(0.0);
    var t2 = vec3(0.0);
    for (var oy = 0u; oy < p.ho; oy++) {
        let y0 = i32(s * oy) - 1;
        let ok0 = y0 >= 0 && y0 <= last;
        let ok1 = y0 + 1 <= last;
        let ok2 = y0 + 2 <= last;
        let b0 = x_plane + u32(clamp(y0, 0, last)) * p.w;
        let b1 = x_plane + u32(clamp(y0 + 1, 0, last)) * p.w;
        let b2 = x_plane + u32(clamp(y0 + 2, 0, last)) * p.w;
        let d_row = (plane * p.ho + oy) * p.wo;
        // Column -1 is padding; stride 1 also carries column 0.
        var c0 = vec2(0.0, select(0.0, dwg_x(b0, 0u, ok0), !stride2));
        var c1 = vec2(0.0, select(0.0, dwg_x(b1, 0u, ok1), !stride2));
        var c2 = vec2(0.0, select(0.0, dwg_x(b2, 0u, ok2), !stride2));
        // A row's sums before the plane's: 4 x wo terms, then ho of those.
        var r0 = vec3(0.0);
        var r1 = vec3(0.0);
        var r2 = vec3(0.0);
        for (var ox0 = 0u; ox0 < p.wo; ox0 += 4u) {
            let d = dwg_dy(d_row, ox0);
            var s0: DwgStep;
            var s1: DwgStep;
            var s2: DwgStep;
            if (stride2) {
                s0 = dwg_row_s2(b0, ox0, ok0, d, c0.x);
                s1 = dwg_row_s2(b1, ox0, ok1, d, c1.x);
                s2 = dwg_row_s2(b2, ox0, ok2, d, c2.x);
            } else {
                s0 = dwg_row_s1(b0, ox0, ok0, d, c0);
                s1 = dwg_row_s1(b1, ox0, ok1, d, c1);
                s2 = dwg_row_s1(b2, ox0, ok2, d, c2);
            }
            r0 += s0.taps;
            r1 += s1.taps;
            r2 += s2.taps;
            c0 = s0.carry;
            c1 = s1.carry;
            c2 = s2.carry;
        }
        t0 += r0;
        t1 += r1;
        t2 += r2;
    }
    // parts[n][c * 9 + tap]: plane = n * c_count + c, so plane * 9 is that.
    let o = plane * 9u;
    dw[o] = t0.x; dw[o + 1u] = t0.y; dw[o + 2u] = t0.z;
    dw[o + 3u] = t1.x; dw[o + 4u] = t1.y; dw[o + 5u] = t1.z;
    dw[o + 6u] = t2.x; dw[o + 7u] = t2.y; dw[o + 8u] = t2.z;
}

@compute @workgroup_size(WG)
fn depthwise_weight_rows_s1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    depthwise_weight_rows(wid, nwg, lid, false);
}
@compute @workgroup_size(WG)
fn depthwise_weight_rows_s2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    depthwise_weight_rows(wid, nwg, lid, true);
}
