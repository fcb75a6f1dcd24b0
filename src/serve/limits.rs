//! Everything one server holds at once, and for how long: the bounds that
//! keep one upload or one slow client from taking it down.
//!
//! Memory, with the defaults (see BENCHMARKS.md for the measured peak):
//! uploads held while they are read and decoded (`upload_budget`), photos
//! being decoded (`max_pixels` pixels at once, about 11 bytes each at the
//! decoder's worst: 16-bit RGBA, then the 8-bit RGB copy), and decoded
//! photos fitted to 2000 pixels a side waiting for the GPU (`max_queued`
//! requests, two photos each at most), on top of the models and the
//! detector.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest upload, in bytes (413 beyond, from Content-Length when given).
    pub max_upload: usize,
    /// Connections open at once; each one past it is answered 503.
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also the longest an
    /// idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once its headers are in
    /// (408 beyond), so a stalled upload never holds anything for longer.
    pub body_timeout: Duration,
    /// Requests one connection may make; the last is answered with
    /// `Connection: close`.
    pub requests_per_connection: usize,
    /// Upload bytes held in memory at once across requests (503 beyond).
    pub upload_budget: usize,
    /// Requests whose photos are being decoded or wait for, or are on, the
    /// GPU (503 beyond).
    pub max_queued: usize,
    /// Pixels of those requests' photos once fitted for detection, 3 bytes
    /// each (503 beyond).
    pub queued_pixels: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_upload: 10_000_000,
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            requests_per_connection: 100,
            upload_budget: 128 << 20,
            max_queued: 64,
            queued_pixels: 64_000_000,
        }
    }
}

/// Multipart framing allowed on top of `max_upload` (field headers,
/// boundaries, the model's name).
pub const FORM_OVERHEAD: usize = 64 * 1024;

/// Decodes running at once at most (small photos share the pixel budget,
/// this many at a time).
pub const MAX_DECODING: u64 = 8;

/// One of `max` places counted by a shared counter, given back when dropped.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    pub fn take(count: Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        let before = count.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(count);
        (before < max).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
