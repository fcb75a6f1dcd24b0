//! What the device was asked to do, counted where it happens: dispatches,
//! compute passes, buffers and bind groups created, bytes allocated, blocking
//! read-backs and submissions. Benchmarks report the difference over a step
//! (`Counters::since`), and tests hold steady-state steps to zero
//! allocations.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Debug)]
pub struct Counters {
    dispatches: AtomicU64,
    compute_passes: AtomicU64,
    buffers_created: AtomicU64,
    bind_groups_created: AtomicU64,
    bytes_allocated: AtomicU64,
    blocking_readbacks: AtomicU64,
    submits: AtomicU64,
}

/// A reading of the counters (or the difference of two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub dispatches: u64,
    pub compute_passes: u64,
    pub buffers_created: u64,
    pub bind_groups_created: u64,
    pub bytes_allocated: u64,
    pub blocking_readbacks: u64,
    pub submits: u64,
}

/// One kind of event.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    Dispatch,
    ComputePass,
    BufferCreated,
    BindGroupCreated,
    BytesAllocated,
    BlockingReadback,
    Submit,
}

impl Counters {
    pub fn add(&self, e: Event, n: u64) {
        let c = match e {
            Event::Dispatch => &self.dispatches,
            Event::ComputePass => &self.compute_passes,
            Event::BufferCreated => &self.buffers_created,
            Event::BindGroupCreated => &self.bind_groups_created,
            Event::BytesAllocated => &self.bytes_allocated,
            Event::BlockingReadback => &self.blocking_readbacks,
            Event::Submit => &self.submits,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Runs `f` and returns what it asked of the device.
    pub fn during<T>(&self, f: impl FnOnce() -> T) -> (T, Counts) {
        let before = self.read();
        let out = f();
        (out, self.read().since(&before))
    }

    pub fn read(&self) -> Counts {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            dispatches: r(&self.dispatches),
            compute_passes: r(&self.compute_passes),
            buffers_created: r(&self.buffers_created),
            bind_groups_created: r(&self.bind_groups_created),
            bytes_allocated: r(&self.bytes_allocated),
            blocking_readbacks: r(&self.blocking_readbacks),
            submits: r(&self.submits),
        }
    }
}

impl Counts {
    /// What happened between `before` and this reading.
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            dispatches: self.dispatches - before.dispatches,
            compute_passes: self.compute_passes - before.compute_passes,
            buffers_created: self.buffers_created - before.buffers_created,
            bind_groups_created: self.bind_groups_created - before.bind_groups_created,
            bytes_allocated: self.bytes_allocated - before.bytes_allocated,
            blocking_readbacks: self.blocking_readbacks - before.blocking_readbacks,
            submits: self.submits - before.submits,
        }
    }
}
