// Batch normalisation over (N, M) per channel of an (N, C, M) tensor
// (M = H*W for images, 1 for 2-D input), with PyTorch's conventions:
// normalise with the biased batch variance, update running_var with the
// unbiased one, running = (1 - momentum) * running + momentum * batch.
// Eval mode runs `apply` with the running statistics instead.

struct Params { n: u32, c: u32, m: u32, momentum: f32, eps: f32, update_running: u32, train: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> var_: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(6) var<storage, read> gamma: array<f32>;
@group(0) @binding(7) var<storage, read> beta: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<f32>;
@group(0) @binding(9) var<storage, read> dy: array<f32>;
@group(0) @binding(10) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(11) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(12) var<storage, read_write> dx: array<f32>;
// Read-only views of the statistics for the kernels that only read them.
@group(0) @binding(13) var<storage, read> stat_mean: array<f32>;
@group(0) @binding(14) var<storage, read> stat_var: array<f32>;

fn index_of(c: u32, j: u32) -> u32 { return ((j / p.m) * p.c + c) * p.m + j % p.m; }

// Batch mean and biased variance per channel (two passes over the data, so
// the variance does not suffer from E[x^2] - E[x]^2 cancellation), and the
// running-statistics update. One workgroup per channel.
@compute @workgroup_size(WG)
fn stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let c = flat_workgroup(wid, nwg);
    let valid = c < p.c;
    let count = p.n * p.m;
    var s = 0.0;
    if (valid) {
        for (var j0 = lid; j0 < count; j0 += BLOCK * WG) {
            var part = 0.0;
            for (var j = j0; j < min(j0 + BLOCK * WG, count); j += WG) { part += x[index_of(c, j)]; }
            s += part;
        }
    }
    let mu = wg_sum(s, lid) / f32(count);
    var q = 0.0;
    if (valid) {
        for (var j0 = lid; j0 < count; j0 += BLOCK * WG) {
            var part = 0.0;
            for (var j = j0; j < min(j0 + BLOCK * WG, count); j += WG) {
                let d = x[index_of(c, j)] - mu;
                part += d * d;
            }
            q += part;
        }
    }
    let v = wg_sum(q, lid) / f32(count);
    if (valid && lid == 0u) {
        mean[c] = mu;
        var_[c] = v;
        if (p.update_running != 0u) {
            let unbiased = select(v, v * f32(count) / f32(count - 1u), count > 1u);
            running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mu;
            running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
        }
    }
}

// y = (x - mean) / sqrt(var + eps) * gamma + beta
@compute @workgroup_size(WG)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.m) { return; }
    let c = (i / p.m) % p.c;
    y[i] = (x[i] - stat_mean[c]) * inverseSqrt(stat_var[c] + p.eps) * gamma[c] + beta[c];
}

// dgamma = sum dy * xhat, dbeta = sum dy. One workgroup per channel.
@compute @workgroup_size(WG)
fn backward_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let c = flat_workgroup(wid, nwg);
    let valid = c < p.c;
    var sg = 0.0;
    var sb = 0.0;
    if (valid) {
        let mu = stat_mean[c];
        let inv = inverseSqrt(stat_var[c] + p.eps);
        let count = p.n * p.m;
        for (var j0 = lid; j0 < count; j0 += BLOCK * WG) {
            var pg = 0.0;
            var pb = 0.0;
            for (var j = j0; j < min(j0 + BLOCK * WG, count); j += WG) {
                let i = index_of(c, j);
                pg += dy[i] * (x[i] - mu) * inv;
                pb += dy[i];
            }
            sg += pg;
            sb += pb;
        }
    }
    sg = wg_sum(sg, lid);
    sb = wg_sum(sb, lid);
    if (valid && lid == 0u) {
        dgamma[c] = sg;
        dbeta[c] = sb;
    }
}

// Train mode (batch statistics): dx = gamma * inv * (dy - (dbeta + xhat * dgamma) / count).
// Eval mode (fixed statistics): dx = gamma * inv * dy.
// Reads dgamma/dbeta as written by backward_params (bound read-write there,
// read here through the same bindings).
@compute @workgroup_size(WG)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.m) { return; }
    let c = (i / p.m) % p.c;
    let inv = inverseSqrt(stat_var[c] + p.eps);
    var g = dy[i];
    if (p.train != 0u) {
        let xhat = (x[i] - stat_mean[c]) * inv;
        g = g - (dbeta[c] + xhat * dgamma[c]) / f32(p.n * p.m);
    }
    dx[i] = gamma[c] * inv * g;
}
