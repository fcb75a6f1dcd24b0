//! f32 (and u32 label) tensors living in GPU storage buffers.
//!
//! A tensor is a buffer plus a row-major shape (NCHW for images). Reshape and
//! flatten are views: they share the buffer and never launch a kernel.

use super::Gpu;
use anyhow::{bail, Result};
use std::sync::Arc;
use wgpu::util::DeviceExt;

#[derive(Clone, Debug)]
pub struct Tensor {
    pub buf: Arc<wgpu::Buffer>,
    pub shape: Vec<usize>,
}

const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Refuses allocations the adapter cannot make, with the shape in the message.
fn check_size(gpu: &Gpu, shape: &[usize]) -> Result<u64> {
    let bytes = (numel(shape) as u64).max(1) * 4;
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
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let size = check_size(gpu, shape)?;
        // wgpu zero-initialises new buffers.
        let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: USAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor { buf: Arc::new(buf), shape: shape.to_vec() })
    }

    pub fn from_f32(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Self::from_words(gpu, bytemuck::cast_slice(data), data.len(), shape)
    }

    /// Integer data (class labels) share the tensor type; shaders read them as u32.
    pub fn from_u32(gpu: &Gpu, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        Self::from_words(gpu, bytemuck::cast_slice(data), data.len(), shape)
    }

    fn from_words(gpu: &Gpu, bytes: &[u8], len: usize, shape: &[usize]) -> Result<Tensor> {
        if len != numel(shape) {
            bail!("{len} values do not fill a tensor of shape {shape:?}");
        }
        check_size(gpu, shape)?;
        if len == 0 {
            return Tensor::zeros(gpu, shape);
        }
        let buf = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytes,
            usage: USAGE,
        });
        Ok(Tensor { buf: Arc::new(buf), shape: shape.to_vec() })
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn bytes(&self) -> u64 {
        self.numel() as u64 * 4
    }

    /// A view with another shape of the same size (flatten, unsqueeze, ...).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            bail!("cannot reshape {:?} to {shape:?}: sizes differ", self.shape);
        }
        Ok(Tensor { buf: self.buf.clone(), shape: shape.to_vec() })
    }

    /// Overwrites the contents from the CPU (queued before the next submission).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            bail!("{} values do not fit a tensor of shape {:?}", data.len(), self.shape);
        }
        gpu.queue.write_buffer(&self.buf, 0, bytemuck::cast_slice(data));
        Ok(())
    }

    pub fn to_vec(&self, gpu: &Gpu) -> Vec<f32> {
        bytemuck::cast_slice(&self.read_bytes(gpu)).to_vec()
    }

    pub fn to_vec_u32(&self, gpu: &Gpu) -> Vec<u32> {
        bytemuck::cast_slice(&self.read_bytes(gpu)).to_vec()
    }

    fn read_bytes(&self, gpu: &Gpu) -> Vec<u8> {
        let size = self.bytes();
        if size == 0 {
            return Vec::new();
        }
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.buf, 0, &staging, 0, size);
        gpu.queue.submit([enc.finish()]);
        staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("mapping a read-back buffer"));
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("waiting for the GPU");
        let out = staging.get_mapped_range(..).expect("mapped range").to_vec();
        staging.unmap();
        out
    }
}
