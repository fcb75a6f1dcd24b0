// The CPU set's 3x3 convolution (stride 1, no padding, one group) for
// adapters whose subgroups hold exactly 8 invocations (lavapipe on AVX2: one
// subgroup is one vector), composed after conv2d.wgsl: src/kernels/conv2d,
// `Path::Window`. Forward only.
//
// Each invocation computes 8 consecutive outputs of one row for 16 output
// channels. Per input channel and kernel row it loads the 10 inputs those
// outputs see once and slides the window over them; each weight is loaded
// by one lane and handed to the others by subgroupBroadcast (a register
// shuffle: an address the same in every lane costs lavapipe a gather). So
// per kernel row 10 input loads and 6 weight loads feed 96 vec4 FMAs, and no
// im2col matrix is written or read.

// Eight consecutive outputs (or inputs) of one row.
struct Px8 { lo: vec4<f32>, hi: vec4<f32> }

struct Acc16 {
    c0: Px8, c1: Px8, c2: Px8, c3: Px8, c4: Px8, c5: Px8, c6: Px8, c7: Px8,
    c8: Px8, c9: Px8, c10: Px8, c11: Px8, c12: Px8, c13: Px8, c14: Px8, c15: Px8,
}

fn px8_fma(c: Px8, w: f32, a: Px8) -> Px8 {
    return Px8(c.lo + w * a.lo, c.hi + w * a.hi);
}

// One tap for the 16 channels: lane j holds channel j's weight in `wa` and
// channel 8 + j's in `wb`.
fn tap16(acc: ptr<function, Acc16>, wa: f32, wb: f32, a: Px8) {
    (*acc).c0 = px8_fma((*acc).c0, subgroupBroadcast(wa, 0u), a);
    (*acc).c1 = px8_fma((*acc).c1, subgroupBroadcast(wa, 1u), a);
    (*acc).c2 = px8_fma((*acc).c2, subgroupBroadcast(wa, 2u), a);
    (*acc).c3 = px8_fma((*acc).c3, subgroupBroadcast(wa, 3u), a);
    (*acc).c4 = px8_fma((*acc).c4, subgroupBroadcast(wa, 4u), a);
    (*acc).c5 = px8_fma((*acc).c5, subgroupBroadcast(wa, 5u), a);
    (*acc).c6 = px8_fma((*acc).c6, subgroupBroadcast(wa, 6u), a);
    (*acc).c7 = px8_fma((*acc).c7, subgroupBroadcast(wa, 7u), a);
    (*acc).c8 = px8_fma((*acc).c8, subgroupBroadcast(wb, 0u), a);
    (*acc).c9 = px8_fma((*acc).c9, subgroupBroadcast(wb, 1u), a);
    (*acc).c10 = px8_fma((*acc).c10, subgroupBroadcast(wb, 2u), a);
    (*acc).c11 = px8_fma((*acc).c11, subgroupBroadcast(wb, 3u), a);
    (*acc).c12 = px8_fma((*acc).c12, subgroupBroadcast(wb, 4u), a);
    (*acc).c13 = px8_fma((*acc).c13, subgroupBroadcast(wb, 5u), a);
    (*acc).c14 = px8_fma((*acc).c14, subgroupBroadcast(wb, 6u), a);
    (*acc).c15 = px8_fma((*acc).c15, subgroupBroadcast(wb, 7u), a);
}

// Channel `co`'s outputs ox0.. of row `base` (n, co, oy, 0): bias, epilogue,
// stored where they lie in the row.
fn put_px8(base: u32, ox0: u32, co: u32, v: Px8) {
    if (co >= p.cout) { return; }
    let b = select(0.0, bias[co], p.has_bias != 0u);
    let k = channel_slope(co);
    let vals = array<f32, 8>(v.lo.x, v.lo.y, v.lo.z, v.lo.w, v.hi.x, v.hi.y, v.hi.z, v.hi.w);
    let at = base + co * p.ho * p.wo + ox0;
    for (var j = 0u; j < 8u; j++) {
        if (ox0 + j < p.wo) { put_y(at + j, vals[j] + b, k); }
    }
}

@compute @workgroup_size(WG)
fn conv3x3_window_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    // Workgroups per (image, block of 16 channels), so that a subgroup
    // shares its channels; invocations over (oy, 8-output block).
    let col_blocks = (p.wo + 7u) / 8u;
    let per_plane = p.ho * col_blocks;
    let groups_per_plane = (per_plane + WG - 1u) / WG;
    let ch_blocks = (p.cout + 15u) / 16u;
    let g = flat_workgroup(wid, nwg);
    if (g >= p.n * ch_blocks * groups_per_plane) { return; }
    let t = (g % groups_per_plane) * WG + lid;
    // Lanes past the plane compute its last block (they take part in the
    // broadcasts) and store nothing.
    let tt = min(t, per_plane - 1u);
    let oy = tt / col_blocks;
    let ox0 = (tt % col_blocks) * 8u;
    let cb = (g / groups_per_plane) % ch_blocks;
    let n = g / (groups_per_plane * ch_blocks);
    let co0 = cb * 16u;
    let taps = p.cin * 9u;
    let wa_row = min(co0 + sid, p.cout - 1u) * taps;
    let wb_row = min(co0 + 8u + sid, p.cout - 1u) * taps;
    // Inputs past a row's end belong to outputs that are not stored; past
    // the image's last value they are clamped.
    let last = (n + 1u) * p.cin * p.h * p.w - 1u;
    var acc: Acc16;
    for (var ci = 0u; ci < p.cin; ci++) {
        for (var ky = 0u; ky < 3u; ky++) {
            let row = ((n * p.cin + ci) * p.h + oy + ky) * p.w + ox0;
            let v0 = x[min(row, last)];
            let v1 = x[min(row + 1u, last)];
            let v2 = x[min(row + 2u, last)];
            let v3 = x[min(row + 3u, last)];
            let v4 = x[min(row + 4u, last)];
            let v5 = x[min(row + 5u, last)];
            let v6 = x[min(row + 6u, last)];
            let v7 = x[min(row + 7u, last)];
            let v8 = x[min(row + 8u, last)];
            let v9 = x[min(row + 9u, last)];
            let tap = (ci * 3u + ky) * 3u;
            tap16(&acc, wt[wa_row + tap], wt[wb_row + tap],
                  Px8(vec4(v0, v1, v2, v3), vec4(v4, v5, v6, v7)));
            tap16(&acc, wt[wa_row + tap + 1u], wt[wb_row + tap + 1u],
                  Px8(vec4(v1, v2, v3, v4), vec4(v5, v6, v7, v8)));
            tap16(&acc, wt[wa_row + tap + 2u], wt[wb_row + tap + 2u],
                  Px8(vec4(v2, v3, v4, v5), vec4(v6, v7, v8, v9)));
        }
    }
    if (t >= per_plane) { return; }
    let base = (n * p.cout * p.ho + oy) * p.wo;
    // Four channels at a time, the next twelve moved down after each: four
    // inlined copies of a channel's stores instead of sixteen (each store is
    // a per-lane scatter, eight branches on llvmpipe, and 128 of them
    // written out made the first dispatch compile for seconds).
    for (var c = 0u; c < 16u; c += 4u) {
        put_px8(base, ox0, co0 + c, acc.c0);
        put_px8(base, ox0, co0 + c + 1u, acc.c1);
        put_px8(base, ox0, co0 + c + 2u, acc.c2);
        put_px8(base, ox0, co0 + c + 3u, acc.c3);
        acc.c0 = acc.c4; acc.c1 = acc.c5; acc.c2 = acc.c6; acc.c3 = acc.c7;
        acc.c4 = acc.c8; acc.c5 = acc.c9; acc.c6 = acc.c10; acc.c7 = acc.c11;
        acc.c8 = acc.c12; acc.c9 = acc.c13; acc.c10 = acc.c14; acc.c11 = acc.c15;
    }
}
