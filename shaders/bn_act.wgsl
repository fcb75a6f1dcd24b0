// Batch normalisation with batch statistics, then PReLU (optional), then a
// residual add (optional), in one dispatch each way: one workgroup per
// channel reduces the channel's statistics and then writes the channel's
// outputs, so the step needs no second pass over the tensor in another
// dispatch. The composed reference is batchnorm -> prelu -> add
// (kernels/batchnorm.rs, activation.rs, residual.rs); the checks compare
// the two. Layout (N, C, M) as in batchnorm.wgsl, PyTorch's conventions.
// Up to 11 storage buffers per entry point (Vulkan, Metal and DX12 GPUs
// allow 31 or more).

struct Params {
    n: u32, c: u32, m: u32, momentum: f32, eps: f32,
    has_slope: u32, has_skip: u32, train: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> mean: array<f32>;
@group(0) @binding(7) var<storage, read_write> var_: array<f32>;
@group(0) @binding(8) var<storage, read> slope: array<f32>;
@group(0) @binding(9) var<storage, read> skip: array<f32>;
@group(0) @binding(10) var<storage, read_write> y: array<f32>;
@group(0) @binding(11) var<storage, read> dy: array<f32>;
@group(0) @binding(12) var<storage, read_write> dx: array<f32>;
@group(0) @binding(13) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(14) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(15) var<storage, read_write> dslope: array<f32>;
@group(0) @binding(16) var<storage, read> stat_mean: array<f32>;
@group(0) @binding(17) var<storage, read> stat_var: array<f32>;

fn index_of(c: u32, j: u32) -> u32 { return ((j / p.m) * p.c + c) * p.m + j % p.m; }

// Train mode: batch mean and biased variance (two passes, as `stats`), the
// running-statistics update, then y = act(bn(x)) (+ skip).
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
    if (!valid) { return; }
    if (lid == 0u) {
        mean[c] = mu;
        var_[c] = v;
        let unbiased = select(v, v * f32(count) / f32(count - 1u), count > 1u);
        running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mu;
        running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
    }
    let inv = inverseSqrt(v + p.eps);
    for (var j = lid; j < count; j += WG) {
        let i = index_of(c, j);
        var z = (x[i] - mu) * inv * gamma[c] + beta[c];
        if (p.has_slope != 0u && z <= 0.0) { z = slope[c] * z; }
        if (p.has_skip != 0u) { z += skip[i]; }
        y[i] = z;
    }
}

// Gradients from dy (the skip's gradient is dy itself, for the caller): the
// PReLU's, recomputing z = bn(x) from the saved statistics, then batch
// norm's. Train mode: dx = gamma * inv * (g - (dbeta + xhat * dgamma) / count);
// eval mode (fixed statistics): dx = gamma * inv * g.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let c = flat_workgroup(wid, nwg);
    let valid = c < p.c;
    let count = p.n * p.m;
    var sg = 0.0;
    var sb = 0.0;
    var ss = 0.0;
    var mu = 0.0;
    var inv = 0.0;
    var a = 0.0;
    if (valid) {
        mu = stat_mean[c];
        inv = inverseSqrt(stat_var[c] + p.eps);
        if (p.has_slope != 0u) { a = slope[c]; }
        for (var j0 = lid; j0 < count; j0 += BLOCK * WG) {
            var pg = 0.0;
            var pb = 0.0;
            var ps = 0.0;
            for (var j = j0; j < min(j0 + BLOCK * WG, count); j += WG) {
                let i = index_of(c, j);
                let xhat = (x[i] - mu) * inv;
                var g = dy[i];
                if (p.has_slope != 0u) {
                    let z = xhat * gamma[c] + beta[c];
                    if (z <= 0.0) {
                        ps += g * z;
                        g = a * g;
                    }
                }
                pg += g * xhat;
                pb += g;
            }
            sg += pg;
            sb += pb;
            ss += ps;
        }
    }
    sg = wg_sum(sg, lid);
    sb = wg_sum(sb, lid);
    ss = wg_sum(ss, lid);
    if (!valid) { return; }
    if (lid == 0u) {
        dgamma[c] = sg;
        dbeta[c] = sb;
        if (p.has_slope != 0u) { dslope[c] = ss; }
    }
    let k = gamma[c] * inv;
    for (var j = lid; j < count; j += WG) {
        let i = index_of(c, j);
        let xhat = (x[i] - mu) * inv;
        var g = dy[i];
        if (p.has_slope != 0u && xhat * gamma[c] + beta[c] <= 0.0) { g = a * g; }
        if (p.train != 0u) { g = g - (sb + xhat * sg) / f32(count); }
        dx[i] = k * g;
    }
}
