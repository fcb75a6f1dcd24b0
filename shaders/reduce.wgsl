// out[c] = sum over (n, m) of x[n, c, m]: the bias gradient of conv and
// linear layers. One workgroup per channel (WG threads, tree reduction).
// sum_slices is the case m = 1 with one thread per c: the second pass of a
// reduction split into n slices, summed in slice order.

struct Params { n: u32, c: u32, m: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn channel_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let c = flat_workgroup(wid, nwg);
    // No early return before the barriers: every thread must reach them.
    let valid = c < p.c;
    var s = 0.0;
    if (valid) {
        let count = p.n * p.m;
        for (var j0 = lid; j0 < count; j0 += BLOCK * WG) {
            var part = 0.0;
            for (var j = j0; j < min(j0 + BLOCK * WG, count); j += WG) {
                part += x[((j / p.m) * p.c + c) * p.m + j % p.m];
            }
            s += part;
        }
    }
    s = wg_sum(s, lid);
    if (valid && lid == 0u) { out[c] = s; }
}

@compute @workgroup_size(WG)
fn sum_slices(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let c = flat_thread(wid, nwg, lid);
    if (c >= p.c) { return; }
    var s = 0.0;
    for (var n = 0u; n < p.n; n++) { s += x[n * p.c + c]; }
    out[c] = s;
}
