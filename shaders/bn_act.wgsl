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
    // The GPU set's sliced kernels below: each channel's rows (batch
    // entries) in `slices` slices of `rows_per_slice`.
    slices: u32, rows_per_slice: u32,
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
@group(0) @binding(18) var<storage, read_write> part: array<f32>;

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

// ---------------------------------------------------------------------------
// The CPU set where M (values per image and channel) is a multiple of 4: the
// same two kernels reading and writing vec4s, each image's quads in turn (no
// division per element), and gamma, beta and the slope read once. On
// lavapipe a vec4 load costs about what one float costs (BENCHMARKS.md,
// "What a load costs on lavapipe").
@group(0) @binding(19) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(20) var<storage, read> skip4: array<vec4<f32>>;
@group(0) @binding(21) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(22) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(23) var<storage, read_write> dx4: array<vec4<f32>>;

fn sum4(v: vec4<f32>) -> f32 { return (v.x + v.y) + (v.z + v.w); }

@compute @workgroup_size(WG)
fn forward_quads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let c = flat_workgroup(wid, nwg);
    let valid = c < p.c;
    let count = p.n * p.m;
    let quads = p.m / 4u;
    var s = 0.0;
    if (valid) {
        for (var b = 0u; b < p.n; b++) {
            let base = (b * p.c + c) * quads;
            var part = vec4<f32>(0.0);
            for (var q = lid; q < quads; q += WG) { part += x4[base + q]; }
            s += sum4(part);
        }
    }
    let mu = wg_sum(s, lid) / f32(count);
    var sq = 0.0;
    if (valid) {
        for (var b = 0u; b < p.n; b++) {
            let base = (b * p.c + c) * quads;
            var part = vec4<f32>(0.0);
            for (var q = lid; q < quads; q += WG) {
                let d = x4[base + q] - mu;
                part += d * d;
            }
            sq += sum4(part);
        }
    }
    let v = wg_sum(sq, lid) / f32(count);
    if (!valid) { return; }
    if (lid == 0u) {
        mean[c] = mu;
        var_[c] = v;
        let unbiased = select(v, v * f32(count) / f32(count - 1u), count > 1u);
        running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mu;
        running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
    }
    let inv = inverseSqrt(v + p.eps);
    let g = gamma[c];
    let be = beta[c];
    var a = 1.0;
    if (p.has_slope != 0u) { a = slope[c]; }
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + c) * quads;
        for (var q = lid; q < quads; q += WG) {
            var z = (x4[base + q] - mu) * inv * g + be;
            z = select(z, a * z, z <= vec4<f32>(0.0));
            if (p.has_skip != 0u) { z += skip4[base + q]; }
            y4[base + q] = z;
        }
    }
}

@compute @workgroup_size(WG)
fn backward_quads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let c = flat_workgroup(wid, nwg);
    let valid = c < p.c;
    let count = p.n * p.m;
    let quads = p.m / 4u;
    var sg = 0.0;
    var sb = 0.0;
    var ss = 0.0;
    var mu = 0.0;
    var inv = 0.0;
    var g = 0.0;
    var be = 0.0;
    // Without a PReLU the slope is 1 and the test z <= 0 changes nothing.
    var a = 1.0;
    if (valid) {
        mu = stat_mean[c];
        inv = inverseSqrt(stat_var[c] + p.eps);
        g = gamma[c];
        be = beta[c];
        if (p.has_slope != 0u) { a = slope[c]; }
        for (var b = 0u; b < p.n; b++) {
            let base = (b * p.c + c) * quads;
            var pg = vec4<f32>(0.0);
            var pb = vec4<f32>(0.0);
            var ps = vec4<f32>(0.0);
            for (var q = lid; q < quads; q += WG) {
                let xhat = (x4[base + q] - mu) * inv;
                let z = xhat * g + be;
                let neg = z <= vec4<f32>(0.0);
                let d = dy4[base + q];
                ps += select(vec4<f32>(0.0), d * z, neg);
                let e = select(d, a * d, neg);
                pg += e * xhat;
                pb += e;
            }
            sg += sum4(pg);
            sb += sum4(pb);
            ss += sum4(ps);
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
    let k = g * inv;
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + c) * quads;
        for (var q = lid; q < quads; q += WG) {
            let xhat = (x4[base + q] - mu) * inv;
            var e = dy4[base + q];
            e = select(e, a * e, xhat * g + be <= vec4<f32>(0.0));
            if (p.train != 0u) { e = e - (sb + xhat * sg) / f32(count); }
            dx4[base + q] = k * e;
        }
    }
}

// ---------------------------------------------------------------------------
// The GPU set (src/kernels/bn_act.rs): the same computation in three
// dispatches each way, so that a GPU gets channels x slices workgroups for
// the statistics instead of one per channel, and one invocation per element
// for the outputs. Partial results are (count, mean, M2) per (channel,
// slice), combined in slice order (Chan et al.), and plain sums backward.

// Element t of slice `sl` of channel c.
fn slice_at(c: u32, sl: u32, t: u32) -> u32 {
    let b = sl * p.rows_per_slice + t / p.m;
    return (b * p.c + c) * p.m + t % p.m;
}

fn slice_count(sl: u32) -> u32 {
    let first = sl * p.rows_per_slice;
    return (min(first + p.rows_per_slice, p.n) - min(first, p.n)) * p.m;
}

@compute @workgroup_size(WG)
fn forward_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg);
    let valid = g < p.c * p.slices;
    let c = g / p.slices;
    let sl = g % p.slices;
    let count = select(0u, slice_count(sl), valid);
    var s = 0.0;
    for (var t = lid; t < count; t += WG) { s += x[slice_at(c, sl, t)]; }
    let mu = wg_sum(s, lid) / f32(max(count, 1u));
    var q = 0.0;
    for (var t = lid; t < count; t += WG) {
        let d = x[slice_at(c, sl, t)] - mu;
        q += d * d;
    }
    let m2 = wg_sum(q, lid);
    if (valid && lid == 0u) {
        part[g * 3u] = f32(count);
        part[g * 3u + 1u] = mu;
        part[g * 3u + 2u] = m2;
    }
}

// One invocation per channel: the slices' statistics combined in order,
// then the running statistics as `forward` updates them.
@compute @workgroup_size(WG)
fn forward_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let c = flat_thread(wid, nwg, lid);
    if (c >= p.c) { return; }
    var na = 0.0;
    var mu = 0.0;
    var m2 = 0.0;
    for (var sl = 0u; sl < p.slices; sl++) {
        let at = (c * p.slices + sl) * 3u;
        let nb = part[at];
        if (nb == 0.0) { continue; }
        let d = part[at + 1u] - mu;
        let n = na + nb;
        mu += d * nb / n;
        m2 += part[at + 2u] + d * d * na * nb / n;
        na = n;
    }
    let count = p.n * p.m;
    let v = m2 / f32(count);
    mean[c] = mu;
    var_[c] = v;
    let unbiased = select(v, v * f32(count) / f32(count - 1u), count > 1u);
    running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mu;
    running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
}

// One invocation per element: y = act(bn(x)) (+ skip).
@compute @workgroup_size(WG)
fn forward_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.m) { return; }
    let c = (i / p.m) % p.c;
    var z = (x[i] - mean[c]) * inverseSqrt(var_[c] + p.eps) * gamma[c] + beta[c];
    if (p.has_slope != 0u && z <= 0.0) { z = slope[c] * z; }
    if (p.has_skip != 0u) { z += skip[i]; }
    y[i] = z;
}

@compute @workgroup_size(WG)
fn backward_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg);
    let valid = g < p.c * p.slices;
    let c = select(0u, g / p.slices, valid);
    let sl = g % p.slices;
    let count = select(0u, slice_count(sl), valid);
    let mu = stat_mean[c];
    let inv = inverseSqrt(stat_var[c] + p.eps);
    var sg = 0.0;
    var sb = 0.0;
    var ss = 0.0;
    for (var t = lid; t < count; t += WG) {
        let i = slice_at(c, sl, t);
        let xhat = (x[i] - mu) * inv;
        var d = dy[i];
        if (p.has_slope != 0u) {
            let z = xhat * gamma[c] + beta[c];
            if (z <= 0.0) {
                ss += d * z;
                d = slope[c] * d;
            }
        }
        sg += d * xhat;
        sb += d;
    }
    sg = wg_sum(sg, lid);
    sb = wg_sum(sb, lid);
    ss = wg_sum(ss, lid);
    if (valid && lid == 0u) {
        part[g * 3u] = sg;
        part[g * 3u + 1u] = sb;
        part[g * 3u + 2u] = ss;
    }
}

// One invocation per channel: the slices' sums in order.
@compute @workgroup_size(WG)
fn backward_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let c = flat_thread(wid, nwg, lid);
    if (c >= p.c) { return; }
    var sg = 0.0;
    var sb = 0.0;
    var ss = 0.0;
    for (var sl = 0u; sl < p.slices; sl++) {
        let at = (c * p.slices + sl) * 3u;
        sg += part[at];
        sb += part[at + 1u];
        ss += part[at + 2u];
    }
    dgamma[c] = sg;
    dbeta[c] = sb;
    if (p.has_slope != 0u) { dslope[c] = ss; }
}

// One invocation per element: dx from the combined sums.
@compute @workgroup_size(WG)
fn backward_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.m) { return; }
    let c = (i / p.m) % p.c;
    let inv = inverseSqrt(stat_var[c] + p.eps);
    let xhat = (x[i] - stat_mean[c]) * inv;
    var g = dy[i];
    if (p.has_slope != 0u && xhat * gamma[c] + beta[c] <= 0.0) { g = slope[c] * g; }
    if (p.train != 0u) { g = g - (dbeta[c] + xhat * dgamma[c]) / f32(p.n * p.m); }
    dx[i] = gamma[c] * inv * g;
}
