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

// One thread per weight element (co, ci, ky, kx): reduces over (n, oy, ox).
@compute @workgroup_size(WG)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let cin_g = p.cin / p.groups;
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.cout * cin_g * p.kh * p.kw) { return; }
    let kx = i % p.kw;
    let ky = (i / p.kw) % p.kh;
    let ci = (i / (p.kw * p.kh)) % cin_g;
    let co = i / (p.kw * p.kh * cin_g);
    let c = (co / (p.cout / p.groups)) * cin_g + ci;
    // Output rows/cols whose window reaches inside the input at this tap.
    var acc = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let xbase = (n * p.cin + c) * p.h * p.w;
        let dybase = (n * p.cout + co) * p.ho * p.wo;
        for (var oy = 0u; oy < p.ho; oy++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad);
            if (iy < 0 || iy >= i32(p.h)) { continue; }
            for (var ox = 0u; ox < p.wo; ox++) {
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                if (ix < 0 || ix >= i32(p.w)) { continue; }
                acc += dy[dybase + oy * p.wo + ox] * x[xbase + u32(iy) * p.w + u32(ix)];
            }
        }
    }
    dw[i] = acc;
}
