// Area resampling of rectangles of one image (src/kernels/resample.rs).
// Each workgroup computes a run of one output row of one channel of one
// rectangle, one output per invocation, so the row's window and the
// decomposition of the workgroup's index are the same in every lane (lavapipe
// has no vector integer division); each column's window comes from a table
// the host computed. Photos hold whole pixel values, so the f32 window sums
// are exact (below 2^24) and each output is rounded once, by the division.

struct Params { n: u32, c: u32, h: u32, w: u32, out_h: u32, out_w: u32, row0: u32, rows: u32,
                chunks: u32, offset: f32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> img: array<f32>;
// Per rectangle: the input rows [start, end) of each of the band's output
// rows, then the input columns of each output column, in image coordinates.
@group(0) @binding(2) var<storage, read> windows: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn area_resize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg);
    if (g >= p.n * p.c * p.rows * p.chunks) { return; }
    // (rectangle, channel, band row), then the run of the row.
    let out_row = g / p.chunks;
    let ox = (g % p.chunks) * WG + lid;
    if (ox >= p.out_w) { return; }
    let band_row = out_row % p.rows;
    let ch = (out_row / p.rows) % p.c;
    let table = (out_row / (p.rows * p.c)) * 2u * (p.rows + p.out_w);
    let ya = windows[table + 2u * band_row];
    let yb = windows[table + 2u * band_row + 1u];
    let xa = windows[table + 2u * (p.rows + ox)];
    let xb = windows[table + 2u * (p.rows + ox) + 1u];
    var sum = 0.0;
    for (var yy = ya; yy < yb; yy++) {
        let row = (ch * p.h + yy) * p.w;
        for (var xx = xa; xx < xb; xx++) {
            sum += img[row + xx];
        }
    }
    y[out_row * p.out_w + ox] = (sum / f32((yb - ya) * (xb - xa)) + p.offset) * p.scale;
}
