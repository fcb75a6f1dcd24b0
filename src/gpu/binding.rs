//! What a dispatch binds, made once and kept: compute pipelines (one per
//! entry point and workgroup size), bind groups (by kernel, parameter slot
//! and the buffers bound) and the uniform arena that holds every dispatch's
//! parameters. `dispatch::Recorder` uses them; nothing else does.

use super::half::{f16_variant, HalfMask};
use super::{shaders::Shader, Gpu, Tensor};
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Mutex;

/// One compute entry point, with its workgroup size as a pipeline constant
/// (`override WG` in `shaders/common.wgsl`), so tiles can be tuned per device
/// without editing shaders, and the storage bindings that hold f16 (bit i:
/// `@binding(i)`; set by `Recorder::dispatch` from the tensors bound, so a
/// kernel is written once for every mix of precisions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub shader: Shader,
    pub entry: &'static str,
    pub wg: u32,
    pub half: HalfMask,
}

impl Kernel {
    pub const fn new(shader: Shader, entry: &'static str, wg: u32) -> Kernel {
        Kernel { shader, entry, wg, half: 0 }
    }

    /// `shader.wgsl::entry`, as profiles name it (`(f16)` after it where
    /// some of its bindings hold f16).
    pub fn label(&self) -> String {
        let half = if self.half != 0 { " (f16)" } else { "" };
        format!("{}::{}{half}", self.shader.name(), self.entry)
    }

    /// The same entry point at another workgroup size.
    pub const fn with_wg(self, wg: u32) -> Kernel {
        Kernel { wg, ..self }
    }
}

type Made = (wgpu::ComputePipeline, wgpu::BindGroupLayout);

#[derive(Default)]
pub(crate) struct PipelineCache(Mutex<HashMap<Kernel, Made>>);

impl PipelineCache {
    pub(crate) fn get(&self, gpu: &Gpu, k: Kernel) -> Made {
        let mut map = self.0.lock().unwrap();
        map.entry(k).or_insert_with(|| create(gpu, k)).clone()
    }

    /// Creates the pipelines of `kernels` not made yet, shared among the
    /// cores (native): a submission that first uses many kernels waits for
    /// the largest share rather than for them all in turn (on lavapipe a
    /// large kernel's pipeline takes 0.1-0.3 s even when Mesa's shader
    /// cache holds its machine code).
    pub(crate) fn prepare(&self, gpu: &Gpu, kernels: impl Iterator<Item = Kernel>) {
        let mut missing: Vec<Kernel> = {
            let map = self.0.lock().unwrap();
            kernels.filter(|k| !map.contains_key(k)).collect()
        };
        missing.sort_by_key(|k| (k.label(), k.wg));
        missing.dedup();
        #[cfg(not(target_arch = "wasm32"))]
        {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(missing.len());
            if threads < 2 {
                return;
            }
            let missing = &missing;
            let made: Vec<(Kernel, Made)> = std::thread::scope(|s| {
                let shares: Vec<_> = (0..threads)
                    .map(|t| {
                        s.spawn(move || {
                            missing.iter().skip(t).step_by(threads).map(|&k| (k, create(gpu, k))).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                shares.into_iter().flat_map(|h| h.join().expect("a pipeline thread")).collect()
            });
            let mut map = self.0.lock().unwrap();
            for (k, m) in made {
                map.entry(k).or_insert(m);
            }
        }
    }
}

/// The compute pipeline of `k` (its shader module made for it).
fn create(gpu: &Gpu, k: Kernel) -> Made {
    // Every shader's variant with all its float bindings in f16 validates
    // (gpu::half's tests), so any subset does.
    let source =
        f16_variant(&k.shader.composed(), k.half).unwrap_or_else(|e| panic!("the f16 variant of {}: {e:#}", k.label()));
    let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(k.shader.name()),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(k.entry),
        layout: None,
        module: &module,
        entry_point: Some(k.entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("WG", k.wg as f64)],
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    let layout = pipeline.get_bind_group_layout(0);
    (pipeline, layout)
}

/// Storage bindings one dispatch may have (`bn_act`'s backward has 11).
pub(crate) const MAX_ARGS: usize = 16;

/// Bind groups by (kernel, arena, parameter slot, size, (binding, buffer,
/// offset, size) bound, unused entries zero; the size too, as the pool may
/// hand one buffer to tensors of different sizes): a fixed-size key, so a cache lookup
/// allocates nothing.
pub(crate) type BindKey = (Kernel, u64, usize, u64, [(u32, u64, u64, u64); MAX_ARGS]);

/// Beyond this many cached bind groups the cache starts afresh (a workload
/// whose buffers never repeat would otherwise grow it without end).
pub(crate) const MAX_BIND_GROUPS: usize = 20_000;

#[derive(Default)]
pub(crate) struct BindGroupCache(pub(crate) Mutex<HashMap<BindKey, wgpu::BindGroup>>);

impl BindGroupCache {
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// The uniform buffer that holds every dispatch's parameters of a
/// submission, one aligned slot each.
pub(crate) struct Arena {
    pub(crate) id: u64,
    pub(crate) buf: wgpu::Buffer,
    pub(crate) slots: usize,
}

/// Arena ids live above the pool's buffer ids.
pub(crate) const ARENA_IDS: u64 = 1 << 62;

/// A tensor's storage as bound: the pool's buffer id, the buffer, byte
/// offset, byte size. It holds the buffer, not the tensor: a value whose
/// last reader is recorded goes back to the pool at once, and a later
/// kernel output of the same recording may take it (the pool's memory plan
/// by liveness).
#[derive(Clone)]
pub(crate) struct Bound(pub u64, pub wgpu::Buffer, pub u64, pub u64);

impl Bound {
    pub(crate) fn of(t: &Tensor) -> Bound {
        Bound(t.buf.id(), t.buf.buffer().clone(), t.offset, t.bytes())
    }
}

pub(crate) fn bind_group(
    gpu: &Gpu,
    layout: &wgpu::BindGroupLayout,
    arena: &Arena,
    offset: u64,
    bytes: u64,
    args: &[(u32, Option<Bound>)],
) -> wgpu::BindGroup {
    let uniform = wgpu::BufferBinding { buffer: &arena.buf, offset, size: NonZeroU64::new(bytes) };
    let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::Buffer(uniform) }];
    // Absent optional inputs get a placeholder each: one shared buffer
    // bound both read-only and read-write would be a usage conflict.
    let mut spare = gpu.placeholders.iter();
    for (binding, t) in args {
        let resource = match t {
            Some(Bound(_, buf, offset, bytes)) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: buf,
                offset: *offset,
                size: NonZeroU64::new(*bytes),
            }),
            None => spare.next().expect("enough placeholders for one dispatch").as_entire_binding(),
        };
        entries.push(wgpu::BindGroupEntry { binding: *binding, resource });
    }
    gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &entries })
}
