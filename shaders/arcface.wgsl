// The ArcFace margin on cosine similarities cos[b, j] (embeddings and class
// weights already L2-normalised and multiplied by src/kernels/arcface.rs):
//   logits[b, j] = s * phi(cos)  for j = label[b],  s * cos otherwise,
//   phi(cos) = cos(theta + m) = cos * cos_m - sin * sin_m    when cos > th = cos(pi - m),
//            = cos - mm,  mm = sin(pi - m) * m                otherwise (keeps phi monotonic).
// `margin = 0` gives plain scaled cosine logits (evaluation).

struct Params { b: u32, c: u32, s: f32, cos_m: f32, sin_m: f32, th: f32, mm: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cosine: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;
@group(0) @binding(4) var<storage, read> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> dcosine: array<f32>;

fn sine(c: f32) -> f32 { return sqrt(clamp(1.0 - c * c, 0.0, 1.0)); }

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.b * p.c) { return; }
    let c = cosine[i];
    var v = c;
    if (i % p.c == labels[i / p.c]) {
        v = select(c - p.mm, c * p.cos_m - sine(c) * p.sin_m, c > p.th);
    }
    logits[i] = p.s * v;
}

// d phi / d cos = cos_m + sin_m * cos / sin above the threshold, 1 below it.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_thread(wid, nwg, lid);
    if (i >= p.b * p.c) { return; }
    let c = cosine[i];
    var d = 1.0;
    if (i % p.c == labels[i / p.c] && c > p.th) {
        d = p.cos_m + p.sin_m * c / sine(c);
    }
    dcosine[i] = p.s * d * dlogits[i];
}
