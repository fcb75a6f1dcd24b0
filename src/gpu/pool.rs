//! A caching allocator for device buffers. A tensor's buffer goes back to
//! the pool when its last handle drops; it is handed out again, for the same
//! size and usage, only after the work recorded so far has been submitted
//! (buffers freed while a recording is open wait in `pending`). So a buffer
//! is never reused by commands that come before its last use in queue
//! order, and uploads (`queue.write_buffer`, which run before the next
//! submission's commands) never overwrite values still to be read.
//!
//! A recycled buffer holds old values: one asked for as zeros is cleared at
//! the start of the next submission (`take_clears`), before any command that
//! can use it.
//!
//! The one exception, the memory plan by liveness (`plan_by_liveness`, on
//! for inference and backward passes): a kernel's output (every
//! element of which a later command of this recording writes before any
//! reads it) may take a buffer freed earlier in the same recording. The
//! commands that used it come before in queue order, and wgpu orders
//! storage writes after earlier reads within the pass, so a value's buffer
//! serves the next value once its last reader is recorded (MobileFaceNet
//! at batch 8 on lavapipe: an inference call's first allocation 131 MB
//! instead of 205, a training step's 357 MB instead of 449). Nothing written from the CPU (uploads, clears, `write`)
//! takes such a buffer: those land before the submission's commands.
//!
//! A step that repeats should get the same buffers as before, so that its
//! cached bind groups serve again: the n-th request of a (size, usage) in a
//! submission prefers the buffers the n-th request got in the last two
//! submissions (two, because what the last step still held when it was
//! submitted comes free only after this one).

use super::counters::{Counters, Event};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Free buffers of one (size, usage).
type Key = (u64, u32);

/// When the free buffers exceed this, those not handed out in the last two
/// submissions are released to the driver.
const MAX_FREE_BYTES: u64 = 2 << 30;

struct State {
    /// `MAX_FREE_BYTES` (tests lower it).
    max_free_bytes: u64,
    next_id: u64,
    free: HashMap<Key, Vec<(u64, wgpu::Buffer)>>,
    free_bytes: u64,
    /// Freed since the last submission.
    pending: Vec<(Key, u64, wgpu::Buffer)>,
    /// Handed out as zeros, to be cleared before the next submission's work.
    clears: Vec<(u64, wgpu::Buffer)>,
    /// Raised when buffers were released: cached bind groups may hold them.
    trimmed: bool,
    /// Allocations of each key since the last submission.
    ordinal: HashMap<Key, usize>,
    /// The buffers last handed out as the n-th allocation of a key in a
    /// submission (newest first).
    recent: HashMap<(Key, usize), [u64; 2]>,
    /// Submissions so far, and the one each buffer was last handed out in.
    submissions: u64,
    handed_out: HashMap<u64, u64>,
    /// Buffers handed out again in the recording that freed them.
    reused_in_recording: std::collections::HashSet<u64>,
    /// Whether kernel outputs may take buffers freed in this recording
    /// (`plan_by_liveness`).
    plan: bool,
}

impl Default for State {
    fn default() -> State {
        State {
            max_free_bytes: MAX_FREE_BYTES,
            next_id: 0,
            free: HashMap::new(),
            free_bytes: 0,
            pending: Vec::new(),
            clears: Vec::new(),
            trimmed: false,
            ordinal: HashMap::new(),
            recent: HashMap::new(),
            submissions: 0,
            handed_out: HashMap::new(),
            reused_in_recording: Default::default(),
            plan: false,
        }
    }
}

#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<State>>);

/// What a buffer from the pool must hold first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Zeros, from the next submission on.
    Zeros,
    /// Anything: it is written from the CPU (or read into) before use.
    Any,
    /// A kernel's output: every element written by a command recorded
    /// next; under the memory plan, possibly a buffer freed in this very
    /// recording.
    KernelOutput,
}

/// A buffer from the pool; dropping it returns it.
pub struct Pooled {
    buf: Option<wgpu::Buffer>,
    id: u64,
    key: Key,
    pool: Pool,
}

impl Pooled {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("a pooled buffer until dropped")
    }

    /// Identifies the buffer (bind groups are cached by it).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pooled(#{}, {} bytes)", self.id, self.key.0)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // A clear still due stays due: commands recorded before the
            // drop may read the zeros (they hold the buffer, not the tensor).
            let mut s = self.pool.0.lock().unwrap();
            s.pending.push((self.key, self.id, buf));
        }
    }
}

impl Pool {
    /// A buffer of `size` bytes and `usage`: a free one, or a new one,
    /// holding what `contents` says.
    pub fn get(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        size: u64,
        usage: wgpu::BufferUsages,
        contents: Contents,
    ) -> Pooled {
        let (zeroed, output) = (contents == Contents::Zeros, contents == Contents::KernelOutput);
        self.take(device, counters, size, usage, zeroed, output)
    }

    /// Turns the memory plan by liveness on or off: the executor turns it on
    /// for an eval-mode pass and for a backward pass (whose gradients die as
    /// they flow back), off for a training forward pass (which keeps its
    /// values for the backward pass anyway). A repeating step still gets the
    /// buffers of the step before, so its cached bind groups serve again.
    pub fn plan_by_liveness(&self, on: bool) {
        self.0.lock().unwrap().plan = on;
    }

    /// Whether buffer `id` was handed out again in the recording that freed
    /// it (so nothing may write it from the CPU before the submission).
    pub fn reused_in_recording(&self, id: u64) -> bool {
        self.0.lock().unwrap().reused_in_recording.contains(&id)
    }

    fn take(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        size: u64,
        usage: wgpu::BufferUsages,
        zeroed: bool,
        output: bool,
    ) -> Pooled {
        let key = (size, usage.bits());
        let mut s = self.0.lock().unwrap();
        let n = *s.ordinal.entry(key).and_modify(|n| *n += 1).or_insert(0);
        let wanted = s.recent.get(&(key, n)).copied().unwrap_or([0, 0]);
        // Prefer the buffers this request got in the last submissions (their
        // bind groups are cached), freed or freed in this recording.
        let in_pending = |s: &State, id: u64| s.pending.iter().position(|(k, i, _)| *k == key && *i == id);
        let from_pending = (output && s.plan)
            .then(|| {
                let at = wanted.iter().find_map(|&w| in_pending(&s, w));
                let at = at.or_else(|| {
                    let free_has_wanted = s.free.get(&key).is_some_and(|v| v.iter().any(|(id, _)| wanted.contains(id)));
                    (!free_has_wanted).then(|| s.pending.iter().rposition(|(k, _, _)| *k == key)).flatten()
                });
                at.map(|i| s.pending.remove(i))
            })
            .flatten();
        if let Some((_, id, buf)) = from_pending {
            s.reused_in_recording.insert(id);
            let at = s.submissions;
            s.handed_out.insert(id, at);
            let r = s.recent.entry((key, n)).or_insert([0, 0]);
            if r[0] != id {
                *r = [id, r[0]];
            }
            return Pooled { buf: Some(buf), id, key, pool: self.clone() };
        }
        let reused = s.free.get_mut(&key).and_then(|v| {
            let at = wanted.iter().find_map(|w| v.iter().position(|(id, _)| id == w));
            match at {
                Some(i) => Some(v.remove(i)),
                None => v.pop(),
            }
        });
        let (id, buf) = match reused {
            Some((id, buf)) => {
                s.free_bytes -= size;
                if zeroed {
                    s.clears.push((id, buf.clone()));
                }
                (id, buf)
            }
            None => {
                // wgpu zero-initialises new buffers.
                let buf = device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage,
                    mapped_at_creation: false,
                });
                counters.add(Event::BufferCreated, 1);
                counters.add(Event::BytesAllocated, size);
                s.next_id += 1;
                (s.next_id, buf)
            }
        };
        let at = s.submissions;
        s.handed_out.insert(id, at);
        let r = s.recent.entry((key, n)).or_insert([0, 0]);
        if r[0] != id {
            *r = [id, r[0]];
        }
        Pooled { buf: Some(buf), id, key, pool: self.clone() }
    }

    /// Keeps at most `bytes` of free buffers past the last two submissions'
    /// (`MAX_FREE_BYTES` by default). Work of ever-changing shapes, a server
    /// detecting faces in photos of every size, reuses little and wants a
    /// small cache.
    pub fn set_max_free_bytes(&self, bytes: u64) {
        self.0.lock().unwrap().max_free_bytes = bytes;
    }

    /// The clear still due for buffer `id`, taken off the list.
    pub fn take_clear(&self, id: u64) -> Option<wgpu::Buffer> {
        let mut s = self.0.lock().unwrap();
        let at = s.clears.iter().position(|(i, _)| *i == id)?;
        Some(s.clears.remove(at).1)
    }

    /// The buffers to clear at the start of the next submission.
    pub fn take_clears(&self) -> Vec<wgpu::Buffer> {
        std::mem::take(&mut self.0.lock().unwrap().clears).into_iter().map(|(_, b)| b).collect()
    }

    /// After a submission: what was freed before it may be handed out again.
    /// Returns whether old buffers were released (see `MAX_FREE_BYTES`).
    pub fn submitted(&self) -> bool {
        let mut s = self.0.lock().unwrap();
        s.ordinal.clear();
        s.reused_in_recording.clear();
        s.submissions += 1;
        for (key, id, buf) in std::mem::take(&mut s.pending) {
            s.free_bytes += key.0;
            s.free.entry(key).or_default().push((id, buf));
        }
        if s.free_bytes > s.max_free_bytes {
            // Release what the last two submissions did not ask for; a
            // steady step's own buffers stay, however large the step.
            let State { free, handed_out, submissions, .. } = &mut *s;
            let mut released = 0;
            for list in free.values_mut() {
                list.retain(|(id, buf)| {
                    let keep = handed_out.get(id).is_some_and(|&at| *submissions - at <= 2);
                    if !keep {
                        released += buf.size();
                        handed_out.remove(id);
                    }
                    keep
                });
            }
            free.retain(|_, list| !list.is_empty());
            s.free_bytes -= released;
            s.trimmed |= released > 0;
        }
        std::mem::take(&mut s.trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Gpu;

    fn buffers(pool: &Pool, gpu: &Gpu, sizes: &[u64]) -> Vec<Pooled> {
        sizes
            .iter()
            .map(|&n| pool.get(&gpu.device, &gpu.counters, n, wgpu::BufferUsages::STORAGE, Contents::Any))
            .collect()
    }

    /// Over the limit, a repeating step keeps its own buffers (nothing is
    /// created again) while a buffer no step asks for any more is released.
    #[test]
    fn trimming_keeps_a_steady_steps_buffers() {
        let gpu = Gpu::new().unwrap();
        let pool = Pool::default();
        pool.set_max_free_bytes(1024);
        drop(buffers(&pool, &gpu, &[4096]));
        pool.submitted();
        let before = gpu.counters.read().buffers_created;
        for _ in 0..4 {
            drop(buffers(&pool, &gpu, &[1024, 1024, 2048]));
            pool.submitted();
        }
        let s = pool.0.lock().unwrap();
        assert_eq!(gpu.counters.read().buffers_created - before, 3, "the step's buffers were created again");
        assert!(!s.free.contains_key(&(4096, wgpu::BufferUsages::STORAGE.bits())), "the stale buffer was kept");
        assert_eq!(s.free_bytes, 4096);
    }
}
