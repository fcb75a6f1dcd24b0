// Prepended to every shader (see src/gpu/shaders.rs).

// Threads per workgroup: a pipeline constant, set from Rust per dispatch.
override WG: u32 = 64u;

// Dispatches larger than the per-dimension limit are laid out over x and y
// (src/gpu/dispatch.rs: grid). This rebuilds the flat workgroup index.
fn flat_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// Flat thread index for one-thread-per-element kernels.
fn flat_thread(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return flat_workgroup(wid, nwg) * WG + lid;
}

// The reduction kernels (one workgroup per channel or row) run WG
// invocations too, and reduce through this scratch array: WG must be a
// power of two there. Each kernel set picks its own width
// (src/gpu/kernel_set.rs: KernelSet::reduction_width).
var<workgroup> red_scratch: array<f32, WG>;

// The strided loops of the reduction kernels add BLOCK terms into a fresh
// partial sum before adding it to the invocation's total: with few
// invocations per workgroup (the CPU set) a plain running sum would add
// thousands of terms to one f32 and lose precision.
const BLOCK: u32 = 32u;

// Sum of `v` over the workgroup, returned to every thread. Must be reached by
// all threads of the workgroup (uniform control flow).
fn wg_sum(v: f32, lid: u32) -> f32 {
    red_scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) { red_scratch[lid] += red_scratch[lid + s]; }
        workgroupBarrier();
    }
    let total = red_scratch[0];
    workgroupBarrier();
    return total;
}

// Maximum over the workgroup, as wg_sum.
fn wg_max(v: f32, lid: u32) -> f32 {
    red_scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) { red_scratch[lid] = max(red_scratch[lid], red_scratch[lid + s]); }
        workgroupBarrier();
    }
    let total = red_scratch[0];
    workgroupBarrier();
    return total;
}

// The activation a convolution or product applies to each output as it
// writes it, after the bias (Params.act; src/kernels/epilogue.rs): 0 none,
// 1 PReLU with the output channel's `slope`, 2 ReLU, 3 ReLU6.
fn epilogue_act(act: u32, v: f32, slope: f32) -> f32 {
    if (act == 1u) { return select(slope * v, v, v > 0.0); }
    if (act == 2u) { return max(v, 0.0); }
    if (act == 3u) { return clamp(v, 0.0, 6.0); }
    return v;
}

// epilogue_act on four outputs of one channel.
fn epilogue_act4(act: u32, v: vec4<f32>, slope: f32) -> vec4<f32> {
    if (act == 1u) { return select(slope * v, v, v > vec4(0.0)); }
    if (act == 2u) { return max(v, vec4(0.0)); }
    if (act == 3u) { return clamp(v, vec4(0.0), vec4(6.0)); }
    return v;
}
