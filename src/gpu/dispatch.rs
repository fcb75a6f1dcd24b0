//! Pipelines and command recording: the only place that talks to wgpu's
//! pipeline, bind-group and pass APIs, so kernels never repeat that plumbing.
//!
//! Binding convention for every shader: `@binding(0)` is a uniform `Params`
//! struct of 32-bit words (see `params`); storage buffers follow at the
//! numbers each entry point declares.
//!
//! A `Recorder` collects a whole step (any number of dispatches and copies)
//! and submits it once. Nothing is created per dispatch: the parameters of
//! every dispatch go into one uniform arena, written once per submission,
//! each at its own aligned slot; bind groups are cached by (kernel, slot,
//! buffers), so a step that repeats with the same buffers (the caching
//! pool hands them out in the same order) creates none; consecutive
//! dispatches share one compute pass (wgpu orders the dispatches in a pass).

use super::binding::{bind_group, Arena, BindKey, Bound, Kernel, ARENA_IDS, MAX_ARGS, MAX_BIND_GROUPS};
use super::counters::Event;
use super::pool::Pooled;
use super::{Gpu, Params, Tensor};
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// Bytes of parameters one dispatch may have.
const SLOT_BYTES: usize = 256;

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

/// How a dispatch is sized: its workgroups, and the longest loop one of its
/// invocations runs, computed where the dispatch is sized (the parallelism
/// report of `bench kernels` and `tests/parallelism.rs` read it back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub workgroups: u64,
    pub serial: u64,
}

impl Launch {
    /// One invocation per element of `threads`, in workgroups of `wg`, each
    /// running `serial` iterations of its longest loop.
    pub fn threads(threads: usize, wg: u32, serial: usize) -> Launch {
        Launch { workgroups: groups(threads, wg), serial: serial as u64 }
    }

    /// `workgroups` workgroups whose invocations run `serial` iterations each.
    pub fn groups(workgroups: usize, serial: usize) -> Launch {
        Launch { workgroups: workgroups as u64, serial: serial as u64 }
    }
}

/// A recorded dispatch as the parallelism report sees it.
#[derive(Clone, Copy, Debug)]
pub struct Launched {
    pub kernel: Kernel,
    pub invocations: u64,
    pub serial: u64,
}

enum Command {
    Dispatch {
        kernel: Kernel,
        launch: Launch,
        /// Parameter slot in the arena and the parameters' size in bytes.
        slot: usize,
        bytes: u64,
        /// Storage bindings; `None` is a placeholder.
        args: Vec<(u32, Option<Bound>)>,
        grid: (u32, u32),
        /// Timestamp slots of a timed dispatch (its own pass).
        timestamps: Option<u32>,
    },
    /// Buffer to buffer, offsets in bytes. `_keep` holds the tensors' pool
    /// buffers until the submission: a tensor dropped while this is recorded
    /// must neither go back to the pool nor lose the clear it is due.
    Copy { src: wgpu::Buffer, src_at: u64, dst: wgpu::Buffer, dst_at: u64, bytes: u64, _keep: [Option<Arc<Pooled>>; 2] },
}

pub struct Recorder<'g> {
    gpu: &'g Gpu,
    commands: Vec<Command>,
    /// The arena's contents: `stride` words per dispatch.
    words: Vec<u32>,
    stride: usize,
    timestamps: Option<(&'g wgpu::QuerySet, u32)>,
    /// Timestamps 0 and 1 of this set at the start and end of the whole
    /// submission's compute work.
    whole: Option<wgpu::QuerySet>,
}

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu) -> Recorder<'g> {
        // A slot holds the largest Params struct (64 words) at the adapter's
        // uniform offset alignment.
        let align = gpu.limits.min_uniform_buffer_offset_alignment.max(4) as usize;
        let stride = SLOT_BYTES.div_ceil(align) * align / 4;
        Recorder { gpu, commands: Vec::new(), words: Vec::new(), stride, timestamps: None, whole: None }
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Bench only: from now on every dispatch runs in its own compute pass
    /// and writes its start and end time into the next two slots of `set`,
    /// starting at `first`.
    pub fn time_dispatches(&mut self, set: &'g wgpu::QuerySet, first: u32) {
        self.timestamps = Some((set, first));
    }

    /// Writes the GPU time at the start of this submission's first compute
    /// pass and at the end of its last into slots 0 and 1 of `set`.
    pub fn time_submission(&mut self, set: wgpu::QuerySet) {
        self.whole = Some(set);
    }

    /// Timestamp slots written so far (with `time_dispatches`).
    pub fn timestamp_slots_used(&self, first: u32) -> u32 {
        self.timestamps.map_or(0, |(_, next)| next - first)
    }

    /// Records one dispatch of `kernel`, sized by `launch`.
    pub fn dispatch(&mut self, kernel: Kernel, params: &Params, args: &[Arg], launch: Launch) -> Result<()> {
        let gpu = self.gpu;
        // The kernel's variant for the precisions of the tensors bound.
        let mut half = 0;
        for (b, _) in args.iter().filter(|(_, t)| t.is_some_and(|t| t.dtype == super::Dtype::F16)) {
            let Some(bit) = 1u32.checked_shl(*b) else {
                bail!("kernel `{}`: an f16 tensor at binding {b} (f16 variants cover bindings 0-31)", kernel.entry)
            };
            half |= bit;
        }
        let kernel = Kernel { half, ..kernel };
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
        if args.len() > MAX_ARGS {
            bail!("kernel `{}`: {} storage bindings, over {MAX_ARGS}", kernel.entry, args.len());
        }
        params.check(kernel.shader, kernel.entry)?;
        if let Some(max) = gpu.max_loop_trips.filter(|&max| launch.serial > max) {
            bail!(
                "kernel `{}`: one invocation would run {} loop iterations, over this driver's {max} \
                 (llvmpipe ends longer loops early, which would give wrong results)",
                kernel.entry,
                launch.serial
            );
        }
        let grid = grid(launch.workgroups, gpu.grid_limit)?;
        let padded = params.padded();
        if padded.len() > self.stride {
            bail!("kernel `{}`: {} parameter words, over one arena slot", kernel.entry, padded.len());
        }
        let slot = self.words.len() / self.stride;
        self.words.extend_from_slice(&padded);
        self.words.resize((slot + 1) * self.stride, 0);
        let timestamps = self.timestamps.as_mut().map(|(_, next)| {
            *next += 2;
            *next - 2
        });
        let args = args.iter().map(|(b, t)| (*b, t.map(Bound::of))).collect();
        self.commands.push(Command::Dispatch {
            kernel,
            launch,
            slot,
            bytes: padded.len() as u64 * 4,
            args,
            grid,
            timestamps,
        });
        Ok(())
    }

    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.numel() != dst.numel() {
            bail!("copy from {:?} to {:?}: sizes differ", src.shape, dst.shape);
        }
        self.copy_region(src, 0, dst, 0, src.numel())
    }

    /// Copies `len` elements from `src[src_at..]` to `dst[dst_at..]`.
    pub fn copy_region(&mut self, src: &Tensor, src_at: usize, dst: &Tensor, dst_at: usize, len: usize) -> Result<()> {
        if src_at + len > src.numel() || dst_at + len > dst.numel() {
            bail!("copy of {len} elements out of range ({:?} at {src_at} -> {:?} at {dst_at})", src.shape, dst.shape);
        }
        if src.dtype != dst.dtype {
            bail!(
                "copy from {:?} ({:?}) to {:?} ({:?}): the precisions differ",
                src.shape,
                src.dtype,
                dst.shape,
                dst.dtype
            );
        }
        let elem = src.dtype.bytes();
        let whole = src_at == 0 && dst_at == 0 && len == src.numel() && len == dst.numel();
        let bytes = if whole { src.bytes() } else { len as u64 * elem };
        let (src_at, dst_at) = (src.offset + src_at as u64 * elem, dst.offset + dst_at as u64 * elem);
        if !(bytes.is_multiple_of(4) && src_at.is_multiple_of(4) && dst_at.is_multiple_of(4)) {
            bail!("a copy of f16 elements must start and end on 4-byte words ({len} elements of {:?})", src.shape);
        }
        self.commands.push(Command::Copy {
            src: src.buf.buffer().clone(),
            src_at,
            dst: dst.buf.buffer().clone(),
            dst_at,
            bytes,
            _keep: [Some(src.buf.clone()), Some(dst.buf.clone())],
        });
        Ok(())
    }

    /// Copies `src` into the start of a host-mappable buffer.
    pub fn copy_to_host(&mut self, src: &Tensor, dst: &wgpu::Buffer) {
        self.copy_to_host_at(src, dst, 0);
    }

    /// `copy_to_host` into `dst` from byte `dst_at` on.
    pub fn copy_to_host_at(&mut self, src: &Tensor, dst: &wgpu::Buffer, dst_at: u64) {
        let (src_at, bytes) = (src.offset, src.bytes());
        let _keep = [Some(src.buf.clone()), None];
        self.commands.push(Command::Copy {
            src: src.buf.buffer().clone(),
            src_at,
            dst: dst.clone(),
            dst_at,
            bytes,
            _keep,
        });
    }

    /// The dispatches recorded so far, in order.
    pub fn launches(&self) -> impl Iterator<Item = Launched> + '_ {
        self.commands.iter().filter_map(|c| match c {
            Command::Dispatch { kernel, launch, .. } => Some(Launched {
                kernel: *kernel,
                invocations: launch.workgroups * kernel.wg as u64,
                serial: launch.serial,
            }),
            Command::Copy { .. } => None,
        })
    }

    /// Submits everything recorded, in one command buffer.
    pub fn submit(self) -> wgpu::SubmissionIndex {
        self.submit_then(|_| {})
    }

    /// Submits everything recorded, then what `after` encodes (bench: the
    /// timestamp resolve), in one command buffer.
    pub fn submit_then(self, after: impl FnOnce(&mut wgpu::CommandEncoder)) -> wgpu::SubmissionIndex {
        let gpu = self.gpu;
        gpu.pipelines.prepare(gpu, self.launches().map(|l| l.kernel));
        let mut arena = gpu.arena.lock().unwrap();
        self.fill_arena(&mut arena);
        let mut binds = gpu.bind_groups.0.lock().unwrap();
        if binds.len() > MAX_BIND_GROUPS {
            binds.clear();
        }
        let index = gpu.submit(|enc| {
            self.encode(enc, arena.as_ref(), &mut binds);
            after(enc);
        });
        drop(binds);
        drop(arena);
        // The recorded buffers' last uses are submitted: they may be reused.
        drop(self.commands);
        gpu.submitted();
        index
    }

    /// Grows the arena to this submission's slots if needed and queues
    /// their parameters (written before the submission's commands run).
    fn fill_arena(&self, arena: &mut Option<Arena>) {
        let gpu = self.gpu;
        let slots = self.words.len() / self.stride;
        if slots == 0 {
            return;
        }
        if arena.as_ref().is_none_or(|a| a.slots < slots) {
            let grown = slots.max(arena.as_ref().map_or(0, |a| a.slots * 2)).max(256);
            let size = (grown * self.stride * 4) as u64;
            let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel parameters"),
                size,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            gpu.counters.add(Event::BufferCreated, 1);
            gpu.counters.add(Event::BytesAllocated, size);
            let id = ARENA_IDS + arena.as_ref().map_or(0, |a| a.id - ARENA_IDS + 1);
            *arena = Some(Arena { id, buf, slots: grown });
        }
        let a = arena.as_ref().expect("grown above");
        gpu.queue.write_buffer(&a.buf, 0, bytemuck::cast_slice(&self.words));
    }

    /// The commands into `enc`: consecutive dispatches in one compute pass
    /// (a timed dispatch in its own), copies between passes.
    fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        arena: Option<&Arena>,
        binds: &mut HashMap<BindKey, wgpu::BindGroup>,
    ) {
        let gpu = self.gpu;
        let align = (self.stride * 4) as u64;
        let timing = self.submission_timing();
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        for (i, cmd) in self.commands.iter().enumerate() {
            match cmd {
                Command::Dispatch { kernel, slot, bytes, args, grid, timestamps, .. } => {
                    let a = arena.expect("an arena for recorded dispatches");
                    let (pipeline, layout) = gpu.pipelines.get(gpu, *kernel);
                    let mut bound = [(0, 0, 0, 0); MAX_ARGS];
                    for (k, (b, t)) in bound.iter_mut().zip(args) {
                        *k = t.as_ref().map_or((*b, 0, 0, 0), |t| (*b, t.0, t.2, t.3));
                    }
                    let key: BindKey = (*kernel, a.id, *slot, *bytes, bound);
                    let group = binds.entry(key).or_insert_with(|| {
                        gpu.counters.add(Event::BindGroupCreated, 1);
                        bind_group(gpu, &layout, a, *slot as u64 * align, *bytes, args)
                    });
                    if timestamps.is_some() || pass.is_none() {
                        drop(pass.take());
                        let desc = wgpu::ComputePassDescriptor {
                            label: None,
                            timestamp_writes: self.pass_timestamps(i, *timestamps, timing),
                        };
                        pass = Some(enc.begin_compute_pass(&desc).forget_lifetime());
                        gpu.counters.add(Event::ComputePass, 1);
                    }
                    let p = pass.as_mut().expect("a pass is open");
                    p.set_pipeline(&pipeline);
                    p.set_bind_group(0, &*group, &[]);
                    p.dispatch_workgroups(grid.0, grid.1, 1);
                    gpu.counters.add(Event::Dispatch, 1);
                    if timestamps.is_some() {
                        drop(pass.take());
                    }
                }
                Command::Copy { src, src_at, dst, dst_at, bytes, .. } => {
                    drop(pass.take());
                    enc.copy_buffer_to_buffer(src, *src_at, dst, *dst_at, *bytes);
                }
            }
        }
    }

    /// For `time_submission`: the first dispatch's index, and the index of
    /// the last copy before the last dispatch (a pass begun after it holds
    /// the last dispatch).
    fn submission_timing(&self) -> (Option<usize>, Option<usize>) {
        let is_dispatch = |c: &Command| matches!(c, Command::Dispatch { .. });
        let first = self.commands.iter().position(is_dispatch);
        let last = self.commands.iter().rposition(is_dispatch);
        (first, last.and_then(|l| self.commands[..l].iter().rposition(|c| !is_dispatch(c))))
    }

    /// The timestamps of a pass begun at command `i`.
    fn pass_timestamps(
        &self,
        i: usize,
        timed: Option<u32>,
        (first, last_break): (Option<usize>, Option<usize>),
    ) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let holds_last = last_break.is_none_or(|b| i > b);
        match (timed, &self.whole) {
            (Some(t), _) => Some(wgpu::ComputePassTimestampWrites {
                query_set: self.timestamps.expect("timed").0,
                beginning_of_pass_write_index: Some(t),
                end_of_pass_write_index: Some(t + 1),
            }),
            (None, Some(set)) if first == Some(i) || holds_last => Some(wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: (first == Some(i)).then_some(0),
                end_of_pass_write_index: holds_last.then_some(1),
            }),
            _ => None,
        }
    }
}

/// Workgroups needed for `threads` threads of `wg` each.
pub fn groups(threads: usize, wg: u32) -> u64 {
    (threads as u64).div_ceil(wg as u64)
}
