// 2-D max pooling, NCHW, square window, with PyTorch's ceil_mode rule for
// the output size (computed in src/kernels/maxpool.rs). Padding reads as -inf.
// Ties go to the first maximum in row-major window order, as PyTorch's CPU
// kernel; the backward pass recomputes that argmax instead of storing indices.

struct Params { n: u32, c: u32, h: u32, w: u32, ho: u32, wo: u32, k: u32, stride: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

// Flat index (within the plane) of the window's maximum; h*w if the window
// lies wholly in the padding (not possible with PyTorch's size rule).
fn argmax(base: u32, oy: u32, ox: u32) -> u32 {
    var best = -3.4028234e38; // f32::MIN (Chrome refuses -3.4028235e38, just beyond it)
    var at = p.h * p.w;
    for (var ky = 0u; ky < p.k; ky++) {
        let iy = i32(oy * p.stride + ky) - i32(p.pad);
        if (iy < 0 || iy >= i32(p.h)) { continue; }
        for (var kx = 0u; kx < p.k; kx++) {
            let ix = i32(ox * p.stride + kx) - i32(p.pad);
            if (ix < 0 || ix >= i32(p.w)) { continue; }
            let j = u32(iy) * p.w + u32(ix);
            let v = x[base + j];
            if (v > best || at == p.h * p.w) { best = v; at = j; }
        }
    }
    return at;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.ho * p.wo) { return; }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let plane = i / (p.wo * p.ho);
    let base = plane * p.h * p.w;
    y[i] = x[base + argmax(base, oy, ox)];
}

// One thread per input element: sums dy over the windows whose argmax it is.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.h * p.w) { return; }
    let j = i % (p.h * p.w);
    let ix = j % p.w;
    let iy = j / p.w;
    let plane = i / (p.h * p.w);
    let base = plane * p.h * p.w;
    // Windows covering iy: oy*stride - pad <= iy <= oy*stride - pad + k - 1.
    let top = i32(iy + p.pad) - i32(p.k) + 1;
    let oy0 = u32(max(0, (top + i32(p.stride) - 1) / i32(p.stride)));
    let oy1 = min((iy + p.pad) / p.stride + 1u, p.ho);
    let left = i32(ix + p.pad) - i32(p.k) + 1;
    let ox0 = u32(max(0, (left + i32(p.stride) - 1) / i32(p.stride)));
    let ox1 = min((ix + p.pad) / p.stride + 1u, p.wo);
    var acc = 0.0;
    for (var oy = oy0; oy < oy1; oy++) {
        for (var ox = ox0; ox < ox1; ox++) {
            if (argmax(base, oy, ox) == j) { acc += dy[plane * p.ho * p.wo + oy * p.wo + ox]; }
        }
    }
    dx[i] = acc;
}
