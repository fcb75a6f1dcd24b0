//! f32 (and u32 label) tensors living in GPU storage buffers, and f16 ones
//! where the adapter offers `SHADER_F16` (activations in mixed precision:
//! stored in half, read into f32 by every kernel, `half.rs`).
//!
//! A tensor is a buffer plus a row-major shape (NCHW for images). Reshape and
//! flatten are views: they share the buffer and never launch a kernel.
//! Buffers come from the device's caching pool (`pool`) and go back to it
//! when the last view drops.

use super::pool::{Contents, Pooled};
use super::Gpu;
use anyhow::{bail, Result};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Tensor {
    pub buf: Arc<Pooled>,
    /// Where the tensor starts in the buffer, in bytes (views of a packed
    /// buffer; 0 otherwise).
    pub offset: u64,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
}

/// How a tensor's elements are stored: 32-bit words (f32, or u32 labels)
/// or f16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dtype {
    #[default]
    F32,
    F16,
}

impl Dtype {
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// Bytes a tensor of `n` elements takes: an f16 one rounded up to
    /// whole vec4<f16>s, as a binding of `array<vec4<f16>>` needs.
    fn size_of(self, n: usize) -> u64 {
        let bytes = (n as u64).max(1) * self.bytes();
        match self {
            Dtype::F32 => bytes,
            Dtype::F16 => bytes.div_ceil(8) * 8,
        }
    }
}

const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// Host-mappable buffers that tensors are copied into to be read.
pub(crate) const READBACK: wgpu::BufferUsages = wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Refuses allocations the adapter cannot make, with the shape in the message.
fn check_size(gpu: &Gpu, shape: &[usize], dtype: Dtype) -> Result<u64> {
    if dtype == Dtype::F16 && !gpu.has_f16() {
        bail!("tensor of shape {shape:?}: this adapter has no f16 storage (wgpu's SHADER_F16)");
    }
    let bytes = dtype.size_of(numel(shape));
    if bytes > gpu.limits.max_buffer_size {
        bail!(
            "tensor of shape {shape:?} needs {:.1} MiB, over this adapter's max buffer size of {:.1} MiB",
            bytes as f64 / 1048576.0,
            gpu.limits.max_buffer_size as f64 / 1048576.0
        );
    }
    Ok(bytes)
}

impl Tensor {
    /// A tensor of zeros (as seen by the next submission's commands).
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        Self::alloc(gpu, shape, Contents::Zeros, Dtype::F32)
    }

    /// Zeros stored as `dtype`.
    pub fn zeros_as(gpu: &Gpu, shape: &[usize], dtype: Dtype) -> Result<Tensor> {
        Self::alloc(gpu, shape, Contents::Zeros, dtype)
    }

    /// A kernel's output, every element of which a command recorded next
    /// writes: its buffer may be one that a value freed earlier in this
    /// recording held (the pool's memory plan by liveness).
    pub fn uninit(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        Self::uninit_as(gpu, shape, Dtype::F32)
    }

    /// A kernel's output stored as `dtype`.
    pub fn uninit_as(gpu: &Gpu, shape: &[usize], dtype: Dtype) -> Result<Tensor> {
        // Poisoning writes from the CPU: never into a buffer this
        // recording still uses.
        Self::alloc(gpu, shape, if gpu.poison_uninit { Contents::Any } else { Contents::KernelOutput }, dtype)
    }

    /// A kernel's output of `shape` stored as `like` is: the activations
    /// and gradients that follow a tensor's precision.
    pub fn uninit_like(gpu: &Gpu, like: &Tensor, shape: &[usize]) -> Result<Tensor> {
        Self::uninit_as(gpu, shape, like.dtype)
    }

    fn alloc(gpu: &Gpu, shape: &[usize], contents: Contents, dtype: Dtype) -> Result<Tensor> {
        let size = check_size(gpu, shape, dtype)?;
        let buf = gpu.pool.get(&gpu.device, &gpu.counters, size, USAGE, contents);
        if contents == Contents::Any && gpu.poison_uninit {
            // NaN in every word: an output a kernel leaves partly unwritten
            // shows in its checks.
            gpu.queue.write_buffer(buf.buffer(), 0, &vec![0xffu8; size as usize]);
        }
        Ok(Tensor { buf: Arc::new(buf), offset: 0, shape: shape.to_vec(), dtype })
    }

    pub fn from_f32(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Self::from_words(gpu, bytemuck::cast_slice(data), data.len(), shape)
    }

    /// f32 data stored as `dtype` (rounded to nearest for f16).
    pub fn from_f32_as(gpu: &Gpu, data: &[f32], shape: &[usize], dtype: Dtype) -> Result<Tensor> {
        match dtype {
            Dtype::F32 => Self::from_f32(gpu, data, shape),
            Dtype::F16 => {
                if data.len() != numel(shape) {
                    bail!("{} values do not fill a tensor of shape {shape:?}", data.len());
                }
                let t = Tensor::alloc(gpu, shape, Contents::Any, Dtype::F16)?;
                if !data.is_empty() {
                    gpu.queue.write_buffer(t.buf.buffer(), 0, &to_half_bytes(data));
                }
                Ok(t)
            }
        }
    }

    /// Integer data (class labels) share the tensor type; shaders read them as u32.
    pub fn from_u32(gpu: &Gpu, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        Self::from_words(gpu, bytemuck::cast_slice(data), data.len(), shape)
    }

    fn from_words(gpu: &Gpu, bytes: &[u8], len: usize, shape: &[usize]) -> Result<Tensor> {
        if len != numel(shape) {
            bail!("{len} values do not fill a tensor of shape {shape:?}");
        }
        let t = Tensor::alloc(gpu, shape, Contents::Any, Dtype::F32)?;
        if len > 0 {
            gpu.queue.write_buffer(t.buf.buffer(), 0, bytes);
        }
        Ok(t)
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Bytes the tensor spans: its elements, an f16 tensor's rounded up to
    /// whole vec4<f16>s (what its bindings, copies and read-backs move).
    pub fn bytes(&self) -> u64 {
        if self.numel() == 0 {
            0
        } else {
            self.dtype.size_of(self.numel())
        }
    }

    /// A view with another shape of the same size (flatten, unsqueeze, ...).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            bail!("cannot reshape {:?} to {shape:?}: sizes differ", self.shape);
        }
        Ok(Tensor { buf: self.buf.clone(), offset: self.offset, shape: shape.to_vec(), dtype: self.dtype })
    }

    /// A tensor of `shape` inside this one's buffer, `at` elements from its
    /// start (aligned as the adapter binds storage).
    pub fn view(&self, gpu: &Gpu, at: usize, shape: &[usize]) -> Result<Tensor> {
        let offset = self.offset + at as u64 * self.dtype.bytes();
        let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
        if at + numel(shape) > self.numel() || !offset.is_multiple_of(align) {
            bail!("a view {shape:?} at {at} of {:?} is out of range or not {align}-byte aligned", self.shape);
        }
        Ok(Tensor { buf: self.buf.clone(), offset, shape: shape.to_vec(), dtype: self.dtype })
    }

    /// Whether this tensor is `view`'s storage seen whole or in part.
    pub fn holds(&self, view: &Tensor) -> bool {
        self.buf.id() == view.buf.id()
            && view.offset >= self.offset
            && view.offset + view.bytes() <= self.offset + self.bytes()
    }

    /// Overwrites the contents from the CPU (queued before the next submission).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            bail!("{} values do not fit a tensor of shape {:?}", data.len(), self.shape);
        }
        if gpu.pool.reused_in_recording(self.buf.id()) {
            bail!("a tensor whose buffer this recording reuses cannot be written from the CPU before it is submitted");
        }
        // A clear still due would run after this write: do it now, in order.
        if let Some(buf) = gpu.pool.take_clear(self.buf.id()) {
            gpu.queue.write_buffer(&buf, 0, &vec![0u8; buf.size() as usize]);
        }
        match self.dtype {
            Dtype::F32 => gpu.queue.write_buffer(self.buf.buffer(), self.offset, bytemuck::cast_slice(data)),
            Dtype::F16 => gpu.queue.write_buffer(self.buf.buffer(), self.offset, &to_half_bytes(data)),
        }
        Ok(())
    }

    /// The values, widened to f32 from an f16 tensor.
    pub fn to_vec(&self, gpu: &Gpu) -> Vec<f32> {
        let mut v = values_of(self.dtype, &self.read_bytes(gpu));
        v.truncate(self.numel());
        v
    }

    pub fn to_vec_u32(&self, gpu: &Gpu) -> Vec<u32> {
        bytemuck::cast_slice(&self.read_bytes(gpu)).to_vec()
    }

    fn read_bytes(&self, gpu: &Gpu) -> Vec<u8> {
        let size = self.bytes();
        if size == 0 {
            return Vec::new();
        }
        let staging = gpu.pool.get(&gpu.device, &gpu.counters, size, READBACK, Contents::Any);
        let index =
            gpu.submit(|enc| enc.copy_buffer_to_buffer(self.buf.buffer(), self.offset, staging.buffer(), 0, size));
        gpu.submitted();
        gpu.read_mapped(staging.buffer(), index)
    }
}

/// f32 values as the little-endian bytes of their f16 roundings, padded to
/// whole 4-byte words (queue writes move words).
fn to_half_bytes(data: &[f32]) -> Vec<u8> {
    let mut out: Vec<u8> = data.iter().flat_map(|&v| ::half::f16::from_f32(v).to_bits().to_le_bytes()).collect();
    out.resize(out.len().div_ceil(4) * 4, 0);
    out
}

/// A tensor's bytes read back as f32 values (f16 widened; padding dropped).
pub(crate) fn values_of(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytemuck::cast_slice(bytes).to_vec(),
        Dtype::F16 => {
            bytes.chunks_exact(2).map(|b| ::half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect()
        }
    }
}
