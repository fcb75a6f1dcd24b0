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
    /// Requests one client address may have in progress at once (429
    /// beyond): with the fair GPU queue, what one client sends delays the
    /// others by at most one job.
    pub max_per_client: usize,
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
            max_per_client: 8,
        }
    }
}

/// Declared pixels per uploaded byte beyond which a photo is refused before
/// decoding: compressed camera photos of faces hold 5 to 30 pixels a byte
/// (a 30-megapixel JPEG of a smooth, upscaled face at quality 85: 27; any
/// face photo at JPEG quality 10: under 20), so 200 leaves them a margin of
/// seven, while a 5 KB JPEG that declares 6000 x 6000 (7,000 pixels a byte)
/// would cost seconds of decoding and detection for nothing.
pub const MAX_PIXELS_PER_BYTE: u64 = 200;
/// Photos of up to this many pixels are cheap whatever their size in bytes
/// (a second of detection at most on a CPU): the density bound starts above.
pub const DENSITY_FROM_PIXELS: u64 = 1_000_000;

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
