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

// Threads of the reduction kernels (one workgroup per channel or row).
const RED: u32 = 256u;
var<workgroup> red_scratch: array<f32, RED>;

// Sum of `v` over the workgroup, returned to every thread. Must be reached by
// all threads of the workgroup (uniform control flow).
fn wg_sum(v: f32, lid: u32) -> f32 {
    red_scratch[lid] = v;
    workgroupBarrier();
    for (var s = RED / 2u; s > 0u; s = s >> 1u) {
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
    for (var s = RED / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) { red_scratch[lid] = max(red_scratch[lid], red_scratch[lid + s]); }
        workgroupBarrier();
    }
    let total = red_scratch[0];
    workgroupBarrier();
    return total;
}

// How the RED invocations of a per-channel reduction walk a channel of an
// (N, C, M) tensor without dividing per element: lane `lid` starts at row
// `n0`, column `j0` and steps `dn` rows and `dj` columns (the divisions run
// once). Rows of M >= RED are walked by every lane along M; shorter rows
// are packed several to a pass. Lanes left over start past the last row.
struct ChannelWalk { n0: u32, j0: u32, dn: u32, dj: u32 }
fn channel_walk(lid: u32, n: u32, m: u32) -> ChannelWalk {
    let dj = max(min(m, RED), 1u);
    let dn = RED / dj;
    let n0 = select(n, lid / dj, lid < dn * dj);
    return ChannelWalk(n0, lid % dj, dn, dj);
}
