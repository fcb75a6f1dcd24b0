//! Pipelines and command recording: the only place that talks to wgpu's
//! pipeline, bind-group and pass APIs, so kernels never repeat that plumbing.
//!
//! Binding convention for every shader: `@binding(0)` is a uniform `Params`
//! struct of 32-bit words (see `params`); storage buffers follow at the numbers each entry
//! point declares. A `Recorder` puts many dispatches into one command encoder
//! and submits once, so a training step never round-trips to the CPU.

use super::{shaders::Shader, Gpu, Params, Tensor};
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use wgpu::util::DeviceExt;

/// One compute entry point, with its workgroup size as a pipeline constant
/// (`override WG` in `shaders/common.wgsl`), so tiles can be tuned per device
/// without editing shaders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub shader: Shader,
    pub entry: &'static str,
    pub wg: u32,
}

impl Kernel {
    pub const fn new(shader: Shader, entry: &'static str, wg: u32) -> Kernel {
        Kernel { shader, entry, wg }
    }
}

#[derive(Default)]
pub(crate) struct PipelineCache(Mutex<HashMap<Kernel, wgpu::ComputePipeline>>);

impl PipelineCache {
    fn get(&self, gpu: &Gpu, k: Kernel) -> wgpu::ComputePipeline {
        let mut map = self.0.lock().unwrap();
        map.entry(k)
            .or_insert_with(|| {
                let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(k.shader.name()),
                    source: wgpu::ShaderSource::Wgsl(k.shader.composed().into()),
                });
                gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(k.entry),
                    layout: None,
                    module: &module,
                    entry_point: Some(k.entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[("WG", k.wg as f64)],
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
            })
            .clone()
    }
}

/// A storage binding: its number in the shader and the tensor bound there
/// (`None` binds a placeholder for an absent optional input such as a bias).
pub type Arg<'a> = (u32, Option<&'a Tensor>);

/// Splits `n` workgroups over x and y when x alone would exceed the
/// adapter's per-dimension limit. Shaders rebuild the flat index with
/// `flat_workgroup()` and bounds-check it.
pub fn grid(n: u64, limit: u32) -> Result<(u32, u32)> {
    let limit = limit as u64;
    if n <= limit {
        return Ok((n.max(1) as u32, 1));
    }
    let y = n.div_ceil(limit);
    if y > limit {
        bail!("a dispatch of {n} workgroups exceeds {limit}x{limit}");
    }
    Ok((limit as u32, y as u32))
}

pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
    timestamps: Option<(&'g wgpu::QuerySet, u32)>,
}

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu) -> Recorder<'g> {
        let encoder = gpu.device.create_command_encoder(&Default::default());
        Recorder { gpu, encoder, timestamps: None }
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Bench only: from now on every dispatch writes its start and end time
    /// into the next two slots of `set`, starting at `first`.
    pub fn time_dispatches(&mut self, set: &'g wgpu::QuerySet, first: u32) {
        self.timestamps = Some((set, first));
    }

    /// Timestamp slots written so far (with `time_dispatches`).
    pub fn timestamp_slots_used(&self, first: u32) -> u32 {
        self.timestamps.map_or(0, |(_, next)| next - first)
    }

    /// Records `workgroups` workgroups of `kernel`.
    pub fn dispatch(&mut self, kernel: Kernel, params: &Params, args: &[Arg], workgroups: u64) -> Result<()> {
        let gpu = self.gpu;
        let max_binding = gpu.limits.max_storage_buffer_binding_size;
        for (binding, t) in args {
            if let Some(t) = t {
                if t.bytes() > max_binding {
                    bail!(
                        "kernel `{}`: binding {binding} (shape {:?}) is {:.1} MiB, over this adapter's \
                         max storage binding of {:.1} MiB; split the batch",
                        kernel.entry,
                        t.shape,
                        t.bytes() as f64 / 1048576.0,
                        max_binding as f64 / 1048576.0
                    );
                }
            }
        }
        params.check(kernel.shader, kernel.entry)?;
        let (gx, gy) = grid(workgroups, gpu.grid_limit)?;
        let pipeline = gpu.pipelines.get(gpu, kernel);
        let uniform = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&params.padded()),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        // Absent optional inputs get a placeholder each: one shared buffer
        // bound both read-only and read-write would be a usage conflict.
        let placeholders: Vec<wgpu::Buffer> =
            args.iter().filter(|(_, t)| t.is_none()).map(|_| gpu.placeholder()).collect();
        let mut spare = placeholders.iter();
        for (binding, t) in args {
            let buf = match t {
                Some(t) => &*t.buf,
                None => spare.next().expect("one placeholder per absent input"),
            };
            entries.push(wgpu::BindGroupEntry { binding: *binding, resource: buf.as_entire_binding() });
        }
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let timestamp_writes = self.timestamps.as_mut().map(|(set, next)| {
            *next += 2;
            wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(*next - 2),
                end_of_pass_write_index: Some(*next - 1),
            }
        });
        let mut pass = self
            .encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(kernel.entry), timestamp_writes });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }

    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.numel() != dst.numel() {
            bail!("copy from {:?} to {:?}: sizes differ", src.shape, dst.shape);
        }
        self.encoder.copy_buffer_to_buffer(&src.buf, 0, &dst.buf, 0, src.bytes());
        Ok(())
    }

    /// Copies `len` elements from `src[src_at..]` to `dst[dst_at..]`.
    pub fn copy_region(&mut self, src: &Tensor, src_at: usize, dst: &Tensor, dst_at: usize, len: usize) -> Result<()> {
        if src_at + len > src.numel() || dst_at + len > dst.numel() {
            bail!("copy of {len} elements out of range ({:?} at {src_at} -> {:?} at {dst_at})", src.shape, dst.shape);
        }
        self.encoder.copy_buffer_to_buffer(&src.buf, src_at as u64 * 4, &dst.buf, dst_at as u64 * 4, len as u64 * 4);
        Ok(())
    }

    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        &mut self.encoder
    }

    /// Submits everything recorded, in one command buffer.
    pub fn submit(self) -> wgpu::SubmissionIndex {
        self.gpu.queue.submit([self.encoder.finish()])
    }
}

/// Workgroups needed for `threads` threads of `wg` each.
pub fn groups(threads: usize, wg: u32) -> u64 {
    (threads as u64).div_ceil(wg as u64)
}
