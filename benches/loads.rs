//! `cargo bench --bench loads`: what one load costs on this adapter, by kind
//! of memory and by whether its address differs between invocations: the
//! measurements behind the CPU kernel set's shapes (BENCHMARKS.md, "What a
//! load costs on lavapipe"). Each case is one dispatch of 256 workgroups of
//! 8 invocations, each running a loop of 4,096 iterations with one load (or
//! one store) in it; the table gives loads per second over the whole device
//! and the floats they bring.

use arcface::gpu::Gpu;
use std::time::Instant;

const ITERATIONS: u32 = 4096;
const WORKGROUPS: u32 = 256;
const WG: u32 = 8;

struct Case {
    name: &'static str,
    floats: u32,
    body: &'static str,
    subgroups: bool,
}

const CASES: [Case; 8] = [
    Case { name: "storage f32, one address for all", floats: 1, subgroups: false,
           body: "var s = 0.0; for (var i = 0u; i < K; i++) { s += a[i]; } o[gid.x] = s;" },
    Case { name: "storage f32, one per invocation", floats: 1, subgroups: false,
           body: "var s = 0.0; for (var i = 0u; i < K; i++) { s += a[i * 8u + lane]; } o[gid.x] = s;" },
    Case { name: "storage vec4, one per invocation", floats: 4, subgroups: false,
           body: "var s = vec4(0.0); for (var i = 0u; i < K; i++) { s += a4[i * 8u + lane]; } o[gid.x] = s.x + s.w;" },
    Case { name: "uniform vec4, one per invocation", floats: 4, subgroups: false,
           body: "var s = vec4(0.0); for (var i = 0u; i < K; i++) { s += u[(i * 8u + lane) & 4095u]; } o[gid.x] = s.x + s.w;" },
    Case { name: "workgroup vec4, one per invocation", floats: 4, subgroups: false,
           body: "var s = vec4(0.0); for (var i = 0u; i < K; i++) { s += sh[(i * 8u + lane) & 1023u]; } o[gid.x] = s.x + s.w;" },
    Case { name: "subgroup broadcast of a vec4", floats: 4, subgroups: true,
           body: "var s = vec4(f32(lane)); for (var i = 0u; i < K; i++) { s = s * 0.5 + subgroupBroadcast(s, 3u); } o[gid.x] = s.x + s.w;" },
    Case { name: "storage f32 store, one per invocation", floats: 1, subgroups: false,
           body: "for (var i = 0u; i < K; i++) { o[(i * 8u + lane) & 65535u] = f32(i); }" },
    Case { name: "no load: a vec4 multiply-add", floats: 0, subgroups: false,
           body: "var s = vec4(f32(lane)); for (var i = 0u; i < K; i++) { s = s * 0.999 + vec4(1.0); } o[gid.x] = s.x;" },
];

fn source(body: &str) -> String {
    format!(
        "@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
@group(0) @binding(3) var<uniform> u: array<vec4<f32>, 4096>;
var<workgroup> sh: array<vec4<f32>, 1024>;
override K: u32 = 1u;
@compute @workgroup_size({WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {{
    if (K == 0u) {{ o[0] = a[0] + a4[0].x + u[0].x + sh[0].x; }}
    {body}
}}"
    )
}

fn seconds(gpu: &Gpu, case: &Case) -> f64 {
    let dev = &gpu.device;
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(case.name),
        source: wgpu::ShaderSource::Wgsl(source(case.body).into()),
    });
    let constants = [("K", ITERATIONS as f64)];
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(case.name),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, ..Default::default() },
        cache: None,
    });
    let buffer = |size: u64, usage| {
        dev.create_buffer(&wgpu::BufferDescriptor { label: None, size, usage, mapped_at_creation: false })
    };
    let storage = buffer(4 << 20, wgpu::BufferUsages::STORAGE);
    let out = buffer(4 << 20, wgpu::BufferUsages::STORAGE);
    let uniform = buffer(65536, wgpu::BufferUsages::UNIFORM);
    let entries = [
        wgpu::BindGroupEntry { binding: 0, resource: storage.as_entire_binding() },
        wgpu::BindGroupEntry { binding: 1, resource: storage.as_entire_binding() },
        wgpu::BindGroupEntry { binding: 2, resource: out.as_entire_binding() },
        wgpu::BindGroupEntry { binding: 3, resource: uniform.as_entire_binding() },
    ];
    let group = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });
    // The best of four: the first also compiles the pipeline.
    (0..4)
        .map(|_| {
            let mut enc = dev.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(WORKGROUPS, 1, 1);
            }
            let t = Instant::now();
            let index = gpu.queue.submit([enc.finish()]);
            gpu.wait(Some(index));
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(2);
        }
    };
    println!("{} ({:?}), subgroup size {:?}", gpu.info.name, gpu.info.backend, gpu.subgroup_size);
    println!("{:40} {:>12} {:>14}", "one loop iteration does", "G ops/s", "G floats/s");
    let ops = f64::from(WORKGROUPS * WG * ITERATIONS);
    for case in &CASES {
        if case.subgroups && gpu.subgroup_size.is_none() {
            println!("{:40} {:>12}", case.name, "no subgroups");
            continue;
        }
        let s = seconds(&gpu, case);
        println!("{:40} {:>12.3} {:>14.3}", case.name, ops / s / 1e9, ops * f64::from(case.floats) / s / 1e9);
    }
}
