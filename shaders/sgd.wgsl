// SGD with momentum and weight decay, PyTorch semantics (dampening 0, no
// Nesterov): d = g + wd * p; v = mu * v + d; p -= lr * v.
// A zero-initialised v makes the first step v = d, as PyTorch's clone.

struct Params { n: u32, lr: f32, momentum: f32, weight_decay: f32 }
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
