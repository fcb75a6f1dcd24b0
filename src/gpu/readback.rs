//! Reading results back. `read` submits the work with a copy behind it and
//! resolves when the copy is mapped (a future: the web cannot block);
//! `read_now` waits for it (native). `AsyncReader` reads small results
//! without waiting: a ring of host-mappable buffers, each copy recorded
//! into the step's own submission, mapped once that is submitted, and
//! picked up by a later, non-blocking poll; a training loop shows its
//! running loss this way, steps behind, and never stalls the queue.

use super::pool::Contents;
use super::{Gpu, Recorder, Tensor};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

const FREE: u8 = 0;
const COPYING: u8 = 1;
const MAPPING: u8 = 2;
const READY: u8 = 3;

struct Slot {
    buf: wgpu::Buffer,
    state: Arc<AtomicU8>,
    /// The caller's label for what was copied (a step number).
    tag: usize,
}

pub struct AsyncReader {
    slots: Vec<Slot>,
    bytes: u64,
}

impl AsyncReader {
    /// `depth` buffers of `bytes` each (created here, once).
    pub fn new(gpu: &Gpu, depth: usize, bytes: u64) -> AsyncReader {
        let slots = (0..depth)
            .map(|_| {
                gpu.counters.add(super::counters::Event::BufferCreated, 1);
                gpu.counters.add(super::counters::Event::BytesAllocated, bytes);
                Slot {
                    buf: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("async read-back"),
                        size: bytes,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }),
                    state: Arc::new(AtomicU8::new(FREE)),
                    tag: 0,
                }
            })
            .collect();
        AsyncReader { slots, bytes }
    }

    /// Records a copy of `t` into a free slot; false when every slot is
    /// still in use (this one is skipped).
    pub fn record(&mut self, rec: &mut Recorder, t: &Tensor, tag: usize) -> bool {
        assert!(t.bytes() <= self.bytes, "a read-back larger than its slots");
        let Some(slot) = self.slots.iter_mut().find(|s| s.state.load(Ordering::Acquire) == FREE) else {
            return false;
        };
        rec.copy_to_host(t, &slot.buf);
        slot.tag = tag;
        slot.state.store(COPYING, Ordering::Release);
        true
    }

    /// After the submission that holds the recorded copies: map them.
    pub fn submitted(&mut self) {
        for s in &self.slots {
            if s.state.load(Ordering::Acquire) == COPYING {
                s.state.store(MAPPING, Ordering::Release);
                let state = s.state.clone();
                // A failed map (the reader dropped on an error path before the
                // copy finished) frees the slot; nobody waits for it.
                s.buf.map_async(wgpu::MapMode::Read, .., move |r| {
                    state.store(if r.is_ok() { READY } else { FREE }, Ordering::Release);
                });
            }
        }
    }

    /// The newest finished read (its tag and values), without waiting;
    /// older finished ones are dropped.
    pub fn poll(&mut self, gpu: &Gpu) -> Option<(usize, Vec<f32>)> {
        let _ = gpu.device.poll(wgpu::PollType::Poll);
        let mut newest: Option<(usize, Vec<f32>)> = None;
        for s in &self.slots {
            if s.state.load(Ordering::Acquire) != READY {
                continue;
            }
            let v: Vec<f32> = bytemuck::cast_slice(&s.buf.get_mapped_range(..).expect("mapped")).to_vec();
            s.buf.unmap();
            s.state.store(FREE, Ordering::Release);
            if newest.as_ref().is_none_or(|(t, _)| s.tag > *t) {
                newest = Some((s.tag, v));
            }
        }
        newest
    }
}

/// Submits `rec` with a copy of `t` behind it and waits for the values: the
/// recorded work and the read in one submission.
pub fn read_now(rec: Recorder, t: &Tensor) -> Vec<f32> {
    pollster::block_on(read(rec, t))
}

/// `read_now` without blocking (what the web needs): the work and the copy
/// are submitted at once; the values come when the copy is mapped.
pub async fn read(mut rec: Recorder<'_>, t: &Tensor) -> Vec<f32> {
    let gpu = rec.gpu();
    if t.numel() == 0 {
        rec.submit();
        return Vec::new();
    }
    let staging = gpu.pool.get(&gpu.device, &gpu.counters, t.bytes(), super::tensor::READBACK, Contents::Any);
    rec.copy_to_host(t, staging.buffer());
    let index = rec.submit();
    let mut v = super::tensor::values_of(t.dtype, &gpu.read_mapped_async(staging.buffer(), index).await);
    v.truncate(t.numel());
    v
}

/// `read` of several tensors: the work and every copy in one submission,
/// one mapping (one read-back, however many tensors).
pub async fn read_all(mut rec: Recorder<'_>, ts: &[&Tensor]) -> Vec<Vec<f32>> {
    let gpu = rec.gpu();
    let total: u64 = ts.iter().map(|t| t.bytes()).sum();
    if total == 0 {
        rec.submit();
        return ts.iter().map(|_| Vec::new()).collect();
    }
    let staging = gpu.pool.get(&gpu.device, &gpu.counters, total, super::tensor::READBACK, Contents::Any);
    let mut at = 0;
    for t in ts {
        rec.copy_to_host_at(t, staging.buffer(), at);
        at += t.bytes();
    }
    let index = rec.submit();
    let bytes = gpu.read_mapped_async(staging.buffer(), index).await;
    let mut start = 0;
    ts.iter()
        .map(|t| {
            let end = start + t.bytes() as usize;
            let mut part = super::tensor::values_of(t.dtype, &bytes[start..end]);
            part.truncate(t.numel());
            start = end;
            part
        })
        .collect()
}

/// Whether a buffer's mapping finished, and whether it succeeded: a future
/// that wgpu's `map_async` callback completes.
#[derive(Clone, Default)]
pub(crate) struct Mapped(Arc<Mutex<(Option<bool>, Option<Waker>)>>);

impl Mapped {
    pub(crate) fn finish(&self, ok: bool) {
        let mut s = self.0.lock().unwrap();
        s.0 = Some(ok);
        if let Some(w) = s.1.take() {
            w.wake();
        }
    }
}

impl Future for Mapped {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let mut s = self.0.lock().unwrap();
        match s.0 {
            Some(ok) => Poll::Ready(ok),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
