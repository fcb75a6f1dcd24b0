// Row-wise L2 normalisation of an (R, D) matrix, as torch.nn.functional.normalize:
// y = x / max(||x||, eps). One workgroup per row.

struct Params { rows: u32, d: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> norms: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read> y_saved: array<f32>;
@group(0) @binding(7) var<storage, read> norms_saved: array<f32>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = flat_workgroup(wid, nwg);
    let valid = r < p.rows;
    var s = 0.0;
    if (valid) {
        for (var j = lid; j < p.d; j += WG) { let v = x[r * p.d + j]; s += v * v; }
    }
    let norm = max(sqrt(wg_sum(s, lid)), p.eps);
    if (valid) {
        for (var j = lid; j < p.d; j += WG) { y[r * p.d + j] = x[r * p.d + j] / norm; }
        if (lid == 0u) { norms[r] = norm; }
    }
}

// dx = (dy - y * <y, dy>) / ||x||; below eps the norm is the constant eps, so dx = dy / eps.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let r = flat_workgroup(wid, nwg);
    let valid = r < p.rows;
    var s = 0.0;
    if (valid) {
        for (var j = lid; j < p.d; j += WG) { s += y_saved[r * p.d + j] * dy[r * p.d + j]; }
    }
    let dot = wg_sum(s, lid);
    if (valid) {
        let norm = norms_saved[r];
        let proj = select(0.0, dot, norm > p.eps);
        for (var j = lid; j < p.d; j += WG) {
            let i = r * p.d + j;
            dx[i] = (dy[i] - y_saved[i] * proj) / norm;
        }
    }
}
