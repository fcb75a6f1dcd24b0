// The CPU set's vec4 product (linear.wgsl: matmul_quads) with A shared
// through the subgroup, for adapters with subgroups of exactly 8 invocations
// (lavapipe on AVX2: one subgroup is one vector). Composed after linear.wgsl
// and compiled only where the adapter has subgroup operations.
//
// The 8 rows of A that a workgroup multiplies are the same for all its
// invocations, yet in matmul_quads each invocation loads all 8 vec4s of them
// per four steps of k (on lavapipe, 8 loops over the lanes). Here invocation
// i of each subgroup loads one of them and subgroupBroadcast hands it to the
// others, a register shuffle: per four steps of k, 1 load of A and 4 of B
// feed 32 vec4 FMAs.

fn matmul_quads_sg(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, sid: u32, a_along_k: bool, b_along_n: bool) {
    let row_blocks = (p.m + 7u) / 8u;
    let col_blocks = (p.n + 4u * WG - 1u) / (4u * WG);
    let out_batch = select(p.batch, 1u, p.reduce_batch != 0u);
    let g = flat_workgroup(wid, nwg);
    if (g >= row_blocks * col_blocks * out_batch) { return; }
    let m0 = (g / col_blocks) % row_blocks * 8u;
    let n0 = ((g % col_blocks) * WG + lid) * 4u;
    let bo = g / (row_blocks * col_blocks);
    // The piece of A this invocation loads: along k, row m0 + sid (past M:
    // the last row); along m, rows m0..m0+4 (sid < 4) or m0+4..m0+8 (past
    // M: the last quad) at k + sid % 4.
    let my_row = min(m0 + sid, p.m - 1u) * p.a_ms;
    let my_m = select(m0, min(m0 + 4u, p.m - 4u), sid >= 4u);
    let my_k = sid & 3u;
    let n_q = min(n0, p.n - 4u);
    let q0 = min(n0, p.n - 1u) * p.b_ns;
    let q1 = min(n0 + 1u, p.n - 1u) * p.b_ns;
    let q2 = min(n0 + 2u, p.n - 1u) * p.b_ns;
    let q3 = min(n0 + 3u, p.n - 1u) * p.b_ns;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0);
    var c5 = vec4<f32>(0.0);
    var c6 = vec4<f32>(0.0);
    var c7 = vec4<f32>(0.0);
    let b_first = select(bo, 0u, p.reduce_batch != 0u);
    let b_last = select(bo + 1u, p.batch, p.reduce_batch != 0u);
    for (var bb = b_first; bb < b_last; bb++) {
        let ab = bb * p.a_bs;
        let bbase = bb * p.b_bs;
        for (var k = 0u; k < p.k; k += 4u) {
            // a_i = A[m0 + i, k..k+4]
            var a0: vec4<f32>; var a1: vec4<f32>; var a2: vec4<f32>; var a3: vec4<f32>;
            var a4_: vec4<f32>; var a5: vec4<f32>; var a6: vec4<f32>; var a7: vec4<f32>;
            if (a_along_k) {
                let mine = a4[(ab + my_row + k) / 4u];
                a0 = subgroupBroadcast(mine, 0u); a1 = subgroupBroadcast(mine, 1u);
                a2 = subgroupBroadcast(mine, 2u); a3 = subgroupBroadcast(mine, 3u);
                a4_ = subgroupBroadcast(mine, 4u); a5 = subgroupBroadcast(mine, 5u);
                a6 = subgroupBroadcast(mine, 6u); a7 = subgroupBroadcast(mine, 7u);
            } else {
                let mine = a4[(ab + (k + my_k) * p.a_ks + my_m) / 4u];
                let l0 = subgroupBroadcast(mine, 0u);
                let l1 = subgroupBroadcast(mine, 1u);
                let l2 = subgroupBroadcast(mine, 2u);
                let l3 = subgroupBroadcast(mine, 3u);
                let h0 = subgroupBroadcast(mine, 4u);
                let h1 = subgroupBroadcast(mine, 5u);
                let h2 = subgroupBroadcast(mine, 6u);
                let h3 = subgroupBroadcast(mine, 7u);
                a0 = vec4(l0.x, l1.x, l2.x, l3.x); a1 = vec4(l0.y, l1.y, l2.y, l3.y);
                a2 = vec4(l0.z, l1.z, l2.z, l3.z); a3 = vec4(l0.w, l1.w, l2.w, l3.w);
                a4_ = vec4(h0.x, h1.x, h2.x, h3.x); a5 = vec4(h0.y, h1.y, h2.y, h3.y);
                a6 = vec4(h0.z, h1.z, h2.z, h3.z); a7 = vec4(h0.w, h1.w, h2.w, h3.w);
            }
            // b_kk = B[k + kk, n0..n0+4]
            var b0: vec4<f32>; var b1: vec4<f32>; var b2: vec4<f32>; var b3: vec4<f32>;
            if (b_along_n) {
                let bt = bbase + k * p.b_ks + n_q;
                b0 = b4[bt / 4u];
                b1 = b4[(bt + p.b_ks) / 4u];
                b2 = b4[(bt + 2u * p.b_ks) / 4u];
                b3 = b4[(bt + 3u * p.b_ks) / 4u];
            } else {
                let e0 = b4[(bbase + q0 + k) / 4u];
                let e1 = b4[(bbase + q1 + k) / 4u];
                let e2 = b4[(bbase + q2 + k) / 4u];
                let e3 = b4[(bbase + q3 + k) / 4u];
                b0 = vec4(e0.x, e1.x, e2.x, e3.x); b1 = vec4(e0.y, e1.y, e2.y, e3.y);
                b2 = vec4(e0.z, e1.z, e2.z, e3.z); b3 = vec4(e0.w, e1.w, e2.w, e3.w);
            }
            c0 += a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
            c1 += a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
            c2 += a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
            c3 += a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
            c4 += a4_.x * b0 + a4_.y * b1 + a4_.z * b2 + a4_.w * b3;
            c5 += a5.x * b0 + a5.y * b1 + a5.z * b2 + a5.w * b3;
            c6 += a6.x * b0 + a6.y * b1 + a6.z * b2 + a6.w * b3;
            c7 += a7.x * b0 + a7.y * b1 + a7.z * b2 + a7.w * b3;
        }
    }
    let cols = vec4<u32>(n0, n0 + 1u, n0 + 2u, n0 + 3u);
    put_cols(bo, m0, cols, c0);
    put_cols(bo, m0 + 1u, cols, c1);
    put_cols(bo, m0 + 2u, cols, c2);
    put_cols(bo, m0 + 3u, cols, c3);
    put_cols(bo, m0 + 4u, cols, c4);
    put_cols(bo, m0 + 5u, cols, c5);
    put_cols(bo, m0 + 6u, cols, c6);
    put_cols(bo, m0 + 7u, cols, c7);
}

@compute @workgroup_size(WG)
fn matmul_quads_sg_ak_bn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, true, true);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg_am_bn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, false, true);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg_ak_bk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, true, false);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg_am_bk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, false, false);
}
