// Area resampling of rectangles of one image (src/kernels/resample.rs): one
// invocation per output value, lanes along a row of outputs. Photos hold
// whole pixel values, so the f32 window sums are exact (below 2^24) and
// each output is rounded once, by the division.

struct Params { n: u32, c: u32, h: u32, w: u32, out_h: u32, out_w: u32, row0: u32, rows: u32,
                offset: f32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> img: array<f32>;
// Four words per rectangle: y0, y1, x0, x1.
@group(0) @binding(2) var<storage, read> rects: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn area_resize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.n * p.c * p.rows * p.out_w) { return; }
    let ox = i % p.out_w;
    let band_row = i / p.out_w;
    let oy = p.row0 + band_row % p.rows;
    let plane = band_row / p.rows;
    let ch = plane % p.c;
    let r = 4u * (plane / p.c);
    let y0 = rects[r];
    let x0 = rects[r + 2u];
    let len_y = rects[r + 1u] - y0;
    let len_x = rects[r + 3u] - x0;
    let ya = y0 + (oy * len_y) / p.out_h;
    let yb = y0 + ((oy + 1u) * len_y + p.out_h - 1u) / p.out_h;
    let xa = x0 + (ox * len_x) / p.out_w;
    let xb = x0 + ((ox + 1u) * len_x + p.out_w - 1u) / p.out_w;
    var sum = 0.0;
    for (var yy = ya; yy < yb; yy++) {
        let row = (ch * p.h + yy) * p.w;
        for (var xx = xa; xx < xb; xx++) {
            sum += img[row + xx];
        }
    }
    y[i] = (sum / f32((yb - ya) * (xb - xa)) + p.offset) * p.scale;
}
