// Activations on (N, C, M) tensors (M = H*W, 1 for 2-D): PReLU with one
// slope per channel, ReLU and ReLU6. ReLU and ReLU6 ignore the channels
// (the Rust side passes n = elements, c = m = 1). One thread per element;
// indices are bounds-checked because the grid is rounded up to whole
// workgroups.

struct Params { n: u32, c: u32, m: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> slope: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> dslope: array<f32>;

fn channel_of(i: u32) -> u32 { return (i / p.m) % p.c; }

@compute @workgroup_size(WG)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.m) { return; }
    y[i] = max(x[i], 0.0);
}

// Gradient 0 at x == 0, as in PyTorch.
@compute @workgroup_size(WG)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.m) { return; }
    dx[i] = select(0.0, dy[i], x[i] > 0.0);
}

@compute @workgroup_size(WG)
fn relu6_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.m) { return; }
    y[i] = clamp(x[i], 0.0, 6.0);
}

// Gradient passes strictly inside (0, 6), as PyTorch's hardtanh_backward.
@compute @workgroup_size(WG)
fn relu6_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.m) { return; }
    dx[i] = select(0.0, dy[i], x[i] > 0.0 && x[i] < 6.0);
}

@compute @workgroup_size(WG)
fn prelu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.m) { return; }
    let v = x[i];
    y[i] = select(slope[channel_of(i)] * v, v, v > 0.0);
}

@compute @workgroup_size(WG)
fn prelu_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.m) { return; }
    dx[i] = select(slope[channel_of(i)] * dy[i], dy[i], x[i] > 0.0);
}

// dslope[c] = sum of dy * x where x <= 0. One workgroup per channel.
@compute @workgroup_size(WG)
fn prelu_backward_slope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let c = flat_workgroup(wid, nwg);
    let valid = c < p.c;
    var s = 0.0;
    if (valid) {
        let count = p.n * p.m;
        for (var j0 = lid; j0 < count; j0 += BLOCK * WG) {
            var part = 0.0;
            for (var j = j0; j < min(j0 + BLOCK * WG, count); j += WG) {
                let i = ((j / p.m) * p.c + c) * p.m + j % p.m;
                let v = x[i];
                part += select(v * dy[i], 0.0, v > 0.0);
            }
            s += part;
        }
    }
    s = wg_sum(s, lid);
    if (valid && lid == 0u) { dslope[c] = s; }
}
