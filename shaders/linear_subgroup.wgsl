// The CPU set's vec4 product (linear.wgsl: matmul_quads) with A shared
// through the subgroup, for adapters with subgroups of exactly 8 invocations
// (lavapipe on AVX2: one subgroup is one vector). Composed after linear.wgsl
// and compiled only where the adapter has subgroup operations.
//
// The 8 rows of A that a workgroup multiplies are the same for all its
// invocations, yet in matmul_quads each invocation loads all 8 vec4s of them
// per four steps of k (on lavapipe, 8 loops over the lanes). Here invocation
// i of each subgroup loads one of them and subgroupBroadcast hands it to the
// others, a register shuffle: per eight rows and four steps of k, 1 load of
// A (and the invocation's 4 of B, shared by all its rows) feed 32 vec4 FMAs.

// c + A-row quad a times B's quads b0..b3 (rows k..k+4 of four columns).
// The four products are added up before they meet the accumulator, as in
// matmul_quads: a K of thousands (a 1x1 weight gradient sums batch x H x W)
// added term by term into one f32 loses enough to fail the step tests.
fn quad_fma(c: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return c + (a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3);
}

// The four k-quads of A's rows r..r+4 (a quad along m each, at k + kk)
// turned into four row quads along k.
struct RowQuads { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> }
fn rows_of(k0: vec4<f32>, k1: vec4<f32>, k2: vec4<f32>, k3: vec4<f32>) -> RowQuads {
    return RowQuads(vec4(k0.x, k1.x, k2.x, k3.x), vec4(k0.y, k1.y, k2.y, k3.y),
                    vec4(k0.z, k1.z, k2.z, k3.z), vec4(k0.w, k1.w, k2.w, k3.w));
}

// Each workgroup owns `rows` rows of C, 32 or 16 (a constant of each entry
// point, so the other's code folds away): per four steps of k, 4 loads of A
// per invocation against 4 of B feed 128 vec4 FMAs, or 2 feed 64 (layers of
// 16 channels or fewer, where most of a 32-row block would be padding).
fn matmul_quads_sg(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, sid: u32, a_along_k: bool, b_mode: u32, rows: u32) {
    let row_blocks = (p.m + rows - 1u) / rows;
    let col_blocks = (p.n + 4u * WG - 1u) / (4u * WG);
    let out_batch = select(p.batch, 1u, p.reduce_batch != 0u);
    let g = flat_workgroup(wid, nwg);
    if (g >= row_blocks * col_blocks * out_batch) { return; }
    let m0 = (g / col_blocks) % row_blocks * rows;
    let n0 = ((g % col_blocks) * WG + lid) * 4u;
    let bo = g / (row_blocks * col_blocks);
    // The pieces of A this invocation loads: along k, rows m0 + 8 i + sid
    // (past M: the last row); along m, the row quads m0 + 8 i + 4 (sid / 4)
    // (past M: the last quad) at k + sid % 4.
    let row_0 = min(m0 + 0u + sid, p.m - 1u) * p.a_ms;
    let row_1 = min(m0 + 8u + sid, p.m - 1u) * p.a_ms;
    let row_2 = min(m0 + 16u + sid, p.m - 1u) * p.a_ms;
    let row_3 = min(m0 + 24u + sid, p.m - 1u) * p.a_ms;
    let quad_0 = min(m0 + 0u + 4u * (sid >> 2u), p.m - 4u);
    let quad_1 = min(m0 + 8u + 4u * (sid >> 2u), p.m - 4u);
    let quad_2 = min(m0 + 16u + 4u * (sid >> 2u), p.m - 4u);
    let quad_3 = min(m0 + 24u + 4u * (sid >> 2u), p.m - 4u);
    let my_k = sid & 3u;
    let bc = b_cols(n0);
    var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0); var c5 = vec4<f32>(0.0); var c6 = vec4<f32>(0.0); var c7 = vec4<f32>(0.0);
    var c8 = vec4<f32>(0.0); var c9 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c12 = vec4<f32>(0.0); var c13 = vec4<f32>(0.0); var c14 = vec4<f32>(0.0); var c15 = vec4<f32>(0.0);
    var c16 = vec4<f32>(0.0); var c17 = vec4<f32>(0.0); var c18 = vec4<f32>(0.0); var c19 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c22 = vec4<f32>(0.0); var c23 = vec4<f32>(0.0);
    var c24 = vec4<f32>(0.0); var c25 = vec4<f32>(0.0); var c26 = vec4<f32>(0.0); var c27 = vec4<f32>(0.0);
    var c28 = vec4<f32>(0.0); var c29 = vec4<f32>(0.0); var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    let b_first = select(bo, 0u, p.reduce_batch != 0u);
    let b_last = select(bo + 1u, p.batch, p.reduce_batch != 0u);
    for (var bb = b_first; bb < b_last; bb++) {
        let ab = bb * p.a_bs;
        let bbase = bb * p.b_bs;
        for (var k = 0u; k < p.k; k += 4u) {
            let b = b_quads(bbase, k, bc, b_mode);
            let b0 = b.b0;
            let b1 = b.b1;
            let b2 = b.b2;
            let b3 = b.b3;
            // Row i of A's block, k..k+4, then its products.
            if (a_along_k) {
                let a0 = a4[(ab + row_0 + k) / 4u];
                let a1 = a4[(ab + row_1 + k) / 4u];
                c0 = quad_fma(c0, subgroupBroadcast(a0, 0u), b0, b1, b2, b3);
                c1 = quad_fma(c1, subgroupBroadcast(a0, 1u), b0, b1, b2, b3);
                c2 = quad_fma(c2, subgroupBroadcast(a0, 2u), b0, b1, b2, b3);
                c3 = quad_fma(c3, subgroupBroadcast(a0, 3u), b0, b1, b2, b3);
                c4 = quad_fma(c4, subgroupBroadcast(a0, 4u), b0, b1, b2, b3);
                c5 = quad_fma(c5, subgroupBroadcast(a0, 5u), b0, b1, b2, b3);
                c6 = quad_fma(c6, subgroupBroadcast(a0, 6u), b0, b1, b2, b3);
                c7 = quad_fma(c7, subgroupBroadcast(a0, 7u), b0, b1, b2, b3);
                c8 = quad_fma(c8, subgroupBroadcast(a1, 0u), b0, b1, b2, b3);
                c9 = quad_fma(c9, subgroupBroadcast(a1, 1u), b0, b1, b2, b3);
                c10 = quad_fma(c10, subgroupBroadcast(a1, 2u), b0, b1, b2, b3);
                c11 = quad_fma(c11, subgroupBroadcast(a1, 3u), b0, b1, b2, b3);
                c12 = quad_fma(c12, subgroupBroadcast(a1, 4u), b0, b1, b2, b3);
                c13 = quad_fma(c13, subgroupBroadcast(a1, 5u), b0, b1, b2, b3);
                c14 = quad_fma(c14, subgroupBroadcast(a1, 6u), b0, b1, b2, b3);
                c15 = quad_fma(c15, subgroupBroadcast(a1, 7u), b0, b1, b2, b3);
                if (rows == 32u) {
                let a2 = a4[(ab + row_2 + k) / 4u];
                let a3 = a4[(ab + row_3 + k) / 4u];
                c16 = quad_fma(c16, subgroupBroadcast(a2, 0u), b0, b1, b2, b3);
                c17 = quad_fma(c17, subgroupBroadcast(a2, 1u), b0, b1, b2, b3);
                c18 = quad_fma(c18, subgroupBroadcast(a2, 2u), b0, b1, b2, b3);
                c19 = quad_fma(c19, subgroupBroadcast(a2, 3u), b0, b1, b2, b3);
                c20 = quad_fma(c20, subgroupBroadcast(a2, 4u), b0, b1, b2, b3);
                c21 = quad_fma(c21, subgroupBroadcast(a2, 5u), b0, b1, b2, b3);
                c22 = quad_fma(c22, subgroupBroadcast(a2, 6u), b0, b1, b2, b3);
                c23 = quad_fma(c23, subgroupBroadcast(a2, 7u), b0, b1, b2, b3);
                c24 = quad_fma(c24, subgroupBroadcast(a3, 0u), b0, b1, b2, b3);
                c25 = quad_fma(c25, subgroupBroadcast(a3, 1u), b0, b1, b2, b3);
                c26 = quad_fma(c26, subgroupBroadcast(a3, 2u), b0, b1, b2, b3);
                c27 = quad_fma(c27, subgroupBroadcast(a3, 3u), b0, b1, b2, b3);
                c28 = quad_fma(c28, subgroupBroadcast(a3, 4u), b0, b1, b2, b3);
                c29 = quad_fma(c29, subgroupBroadcast(a3, 5u), b0, b1, b2, b3);
                c30 = quad_fma(c30, subgroupBroadcast(a3, 6u), b0, b1, b2, b3);
                c31 = quad_fma(c31, subgroupBroadcast(a3, 7u), b0, b1, b2, b3);
                }
            } else {
                let at = ab + (k + my_k) * p.a_ks;
                let a0 = a4[(at + quad_0) / 4u];
                let a1 = a4[(at + quad_1) / 4u];
                // Row quad q at k + kk is invocation (q % 2) * 4 + kk's piece.
                let r0 = rows_of(subgroupBroadcast(a0, 0u), subgroupBroadcast(a0, 1u),
                                 subgroupBroadcast(a0, 2u), subgroupBroadcast(a0, 3u));
                let r1 = rows_of(subgroupBroadcast(a0, 4u), subgroupBroadcast(a0, 5u),
                                 subgroupBroadcast(a0, 6u), subgroupBroadcast(a0, 7u));
                let r2 = rows_of(subgroupBroadcast(a1, 0u), subgroupBroadcast(a1, 1u),
                                 subgroupBroadcast(a1, 2u), subgroupBroadcast(a1, 3u));
                let r3 = rows_of(subgroupBroadcast(a1, 4u), subgroupBroadcast(a1, 5u),
                                 subgroupBroadcast(a1, 6u), subgroupBroadcast(a1, 7u));
                c0 = quad_fma(c0, r0.r0, b0, b1, b2, b3);
                c1 = quad_fma(c1, r0.r1, b0, b1, b2, b3);
                c2 = quad_fma(c2, r0.r2, b0, b1, b2, b3);
                c3 = quad_fma(c3, r0.r3, b0, b1, b2, b3);
                c4 = quad_fma(c4, r1.r0, b0, b1, b2, b3);
                c5 = quad_fma(c5, r1.r1, b0, b1, b2, b3);
                c6 = quad_fma(c6, r1.r2, b0, b1, b2, b3);
                c7 = quad_fma(c7, r1.r3, b0, b1, b2, b3);
                c8 = quad_fma(c8, r2.r0, b0, b1, b2, b3);
                c9 = quad_fma(c9, r2.r1, b0, b1, b2, b3);
                c10 = quad_fma(c10, r2.r2, b0, b1, b2, b3);
                c11 = quad_fma(c11, r2.r3, b0, b1, b2, b3);
                c12 = quad_fma(c12, r3.r0, b0, b1, b2, b3);
                c13 = quad_fma(c13, r3.r1, b0, b1, b2, b3);
                c14 = quad_fma(c14, r3.r2, b0, b1, b2, b3);
                c15 = quad_fma(c15, r3.r3, b0, b1, b2, b3);
                if (rows == 32u) {
                let a2 = a4[(at + quad_2) / 4u];
                let a3 = a4[(at + quad_3) / 4u];
                let r4 = rows_of(subgroupBroadcast(a2, 0u), subgroupBroadcast(a2, 1u),
                                 subgroupBroadcast(a2, 2u), subgroupBroadcast(a2, 3u));
                let r5 = rows_of(subgroupBroadcast(a2, 4u), subgroupBroadcast(a2, 5u),
                                 subgroupBroadcast(a2, 6u), subgroupBroadcast(a2, 7u));
                let r6 = rows_of(subgroupBroadcast(a3, 0u), subgroupBroadcast(a3, 1u),
                                 subgroupBroadcast(a3, 2u), subgroupBroadcast(a3, 3u));
                let r7 = rows_of(subgroupBroadcast(a3, 4u), subgroupBroadcast(a3, 5u),
                                 subgroupBroadcast(a3, 6u), subgroupBroadcast(a3, 7u));
                c16 = quad_fma(c16, r4.r0, b0, b1, b2, b3);
                c17 = quad_fma(c17, r4.r1, b0, b1, b2, b3);
                c18 = quad_fma(c18, r4.r2, b0, b1, b2, b3);
                c19 = quad_fma(c19, r4.r3, b0, b1, b2, b3);
                c20 = quad_fma(c20, r5.r0, b0, b1, b2, b3);
                c21 = quad_fma(c21, r5.r1, b0, b1, b2, b3);
                c22 = quad_fma(c22, r5.r2, b0, b1, b2, b3);
                c23 = quad_fma(c23, r5.r3, b0, b1, b2, b3);
                c24 = quad_fma(c24, r6.r0, b0, b1, b2, b3);
                c25 = quad_fma(c25, r6.r1, b0, b1, b2, b3);
                c26 = quad_fma(c26, r6.r2, b0, b1, b2, b3);
                c27 = quad_fma(c27, r6.r3, b0, b1, b2, b3);
                c28 = quad_fma(c28, r7.r0, b0, b1, b2, b3);
                c29 = quad_fma(c29, r7.r1, b0, b1, b2, b3);
                c30 = quad_fma(c30, r7.r2, b0, b1, b2, b3);
                c31 = quad_fma(c31, r7.r3, b0, b1, b2, b3);
                }
            }
        }
    }
    // Eight rows at a time, the next eight moved down after each: one
    // inlined copy of the epilogue instead of four (each row's four stores
    // are per-lane scatters, eight branches each on llvmpipe; written out
    // for 32 rows they made each layout's first dispatch compile for
    // seconds; a private array indexed by the row is 3x slower to run).
    let cols = vec4<u32>(n0, n0 + 1u, n0 + 2u, n0 + 3u);
    for (var r = 0u; r < rows; r += 8u) {
        put_8_rows(bo, m0 + r, cols, c0, c1, c2, c3, c4, c5, c6, c7);
        c0 = c8; c1 = c9; c2 = c10; c3 = c11; c4 = c12; c5 = c13; c6 = c14; c7 = c15;
        c8 = c16; c9 = c17; c10 = c18; c11 = c19; c12 = c20; c13 = c21; c14 = c22; c15 = c23;
        c16 = c24; c17 = c25; c18 = c26; c19 = c27; c20 = c28; c21 = c29; c22 = c30; c23 = c31;
    }
}

@compute @workgroup_size(WG)
fn matmul_quads_sg_ak_bn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, true, B_ALONG_N, 32u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg_ak_bk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, true, B_ALONG_K, 32u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg_ak_bf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, true, B_ALONG_N_FLOATS, 32u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg_am_bn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, false, B_ALONG_N, 32u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg_am_bk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, false, B_ALONG_K, 32u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg_am_bf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, false, B_ALONG_N_FLOATS, 32u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg16_ak_bn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, true, B_ALONG_N, 16u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg16_ak_bk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, true, B_ALONG_K, 16u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg16_ak_bf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, true, B_ALONG_N_FLOATS, 16u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg16_am_bn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, false, B_ALONG_N, 16u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg16_am_bk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, false, B_ALONG_K, 16u);
}
@compute @workgroup_size(WG)
fn matmul_quads_sg16_am_bf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    matmul_quads_sg(wid, nwg, lid, sid, false, B_ALONG_N_FLOATS, 16u);
}
