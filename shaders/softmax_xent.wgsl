// Softmax and mean softmax cross-entropy over the rows of (B, C) logits.
// Numerically stable: subtract the row maximum before exp.

struct Params { b: u32, c: u32, has_labels: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
@group(0) @binding(6) var<storage, read> dloss: array<f32>;
@group(0) @binding(7) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(8) var<storage, read> probs_saved: array<f32>;
@group(0) @binding(9) var<storage, read> row_loss_saved: array<f32>;
@group(0) @binding(10) var<storage, read_write> tally: array<f32>;

// Softmax of one row per workgroup; with labels, also -log p[label].
@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = flat_workgroup(wid, nwg);
    let valid = r < p.b;
    let base = r * p.c;
    var mx = -3.4028234e38; // f32::MIN (Chrome refuses -3.4028235e38, just beyond it)
    if (valid) {
        for (var j = lid; j < p.c; j += WG) { mx = max(mx, logits[base + j]); }
    }
    mx = wg_max(mx, lid);
    var s = 0.0;
    if (valid) {
        for (var j = lid; j < p.c; j += WG) { s += exp(logits[base + j] - mx); }
    }
    s = wg_sum(s, lid);
    if (valid) {
        for (var j = lid; j < p.c; j += WG) { probs[base + j] = exp(logits[base + j] - mx) / s; }
        if (lid == 0u && p.has_labels != 0u) {
            row_loss[r] = log(s) + mx - logits[base + labels[r]];
        }
    }
}

// loss[0] = mean of row_loss (one workgroup).
@compute @workgroup_size(WG)
fn mean_loss(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var r = lid; r < p.b; r += WG) { s += row_loss_saved[r]; }
    s = wg_sum(s, lid);
    if (lid == 0u) { loss[0] = s / f32(p.b); }
}

// dlogits = (softmax - onehot(label)) * dloss / B
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.b * p.c) { return; }
    let onehot = select(0.0, 1.0, i % p.c == labels[i / p.c]);
    dlogits[i] = (probs_saved[i] - onehot) * dloss[0] / f32(p.b);
}

// A training step's figures added up on the GPU, so that an epoch reads
// nothing back per step: tally[0] += loss * B and tally[1] += the rows whose
// largest logit (the first, on ties) is the label's, while the loss is
// finite; the first time it is not, tally[2] = 1 and tally[3] = that loss.
// Finiteness is read from the exponent bits: a shader compiler may assume
// that float comparisons never see NaN. One workgroup.
@compute @workgroup_size(WG)
fn tally_step(@builtin(local_invocation_index) lid: u32) {
    var hits = 0.0;
    for (var r = lid; r < p.b; r += WG) {
        let base = r * p.c;
        var best = 0u;
        for (var j = 1u; j < p.c; j++) {
            if (logits[base + j] > logits[base + best]) { best = j; }
        }
        hits += select(0.0, 1.0, best == labels[r]);
    }
    hits = wg_sum(hits, lid);
    if (lid == 0u) {
        let l = loss[0];
        let finite = (bitcast<u32>(l) & 0x7f800000u) != 0x7f800000u;
        if (finite) {
            tally[0] += l * f32(p.b);
            tally[1] += hits;
        } else if (tally[2] == 0.0) {
            tally[2] = 1.0;
            tally[3] = l;
        }
    }
}
