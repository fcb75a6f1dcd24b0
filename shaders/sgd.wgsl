// SGD with momentum and weight decay, PyTorch semantics (dampening 0, no
// Nesterov): d = g + wd * p; v = mu * v + d; p -= lr * v.
// A zero-initialised v makes the first step v = d, as PyTorch's clone.

// growth_interval: the mixed-precision scaler's (below).
struct Params { n: u32, lr: f32, momentum: f32, weight_decay: f32, growth_interval: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> velocity: array<f32>;

@compute @workgroup_size(WG)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n) { return; }
    let d = grad[i] + p.weight_decay * param[i];
    let v = p.momentum * velocity[i] + d;
    velocity[i] = v;
    param[i] = param[i] - p.lr * v;
}

// Mixed precision (f16 activations, f32 weights and gradients): the loss's
// upstream gradient is `state[0]`, the loss scale, so that small gradients
// survive f16; before the step every gradient is tested, and a step whose
// gradients hold an inf or NaN (f16 overflowed) is skipped and the scale
// halved; after p.growth_interval good steps in a row it doubles.
// state: [scale, good steps in a row, steps skipped in all, unused].
const MAX_SCALE: f32 = 16777216.0;
const MIN_SCALE: f32 = 1.52587890625e-05;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> found: atomic<u32>;
@group(0) @binding(6) var<storage, read> found_now: array<u32>;

// From the exponent bits: a shader compiler may assume floats finite.
fn is_finite(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u; }

// found = 1 where any of the n gradients is inf or NaN (every invocation
// that sees one stores the same 1).
@compute @workgroup_size(WG)
fn find_non_finite(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n) { return; }
    if (!is_finite(grad[i])) { atomicStore(&found, 1u); }
}

// `step` on the gradient divided by the scale; nothing where found.
@compute @workgroup_size(WG)
fn step_scaled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n || found_now[0] != 0u) { return; }
    let d = grad[i] / state[0] + p.weight_decay * param[i];
    let v = p.momentum * velocity[i] + d;
    velocity[i] = v;
    param[i] = param[i] - p.lr * v;
}

// The scale for the next step (invocation 0), and found cleared for it.
@compute @workgroup_size(WG)
fn update_scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    if (flat_thread(wid, nwg, lid) != 0u) { return; }
    if (atomicLoad(&found) != 0u) {
        state[0] = max(state[0] * 0.5, MIN_SCALE);
        state[1] = 0.0;
        state[2] = state[2] + 1.0;
    } else {
        state[1] = state[1] + 1.0;
        if (state[1] >= p.growth_interval) {
            state[0] = min(state[0] * 2.0, MAX_SCALE);
            state[1] = 0.0;
        }
    }
    atomicStore(&found, 0u);
}
