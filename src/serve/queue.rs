//! The GPU worker's queue, fair between clients: each client address has
//! its own line, and the worker takes one job from each line in turn, so a
//! client that sends many costly photos delays another's by at most one job
//! of its own, however many it queued.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Condvar, Mutex};

pub struct FairQueue<Job> {
    state: Mutex<Lines<Job>>,
    ready: Condvar,
}

struct Lines<Job> {
    /// One line per client with jobs waiting, in the order they are served.
    lines: VecDeque<(IpAddr, VecDeque<Job>)>,
    closed: bool,
}

impl<Job> Default for FairQueue<Job> {
    fn default() -> Self {
        FairQueue { state: Mutex::new(Lines { lines: VecDeque::new(), closed: false }), ready: Condvar::new() }
    }
}

impl<Job> Lines<Job> {
    /// The first job of the next client's line if `wanted` accepts it (the
    /// client's line then goes to the back); else nothing, and the turn
    /// stays first.
    fn take_turn(&mut self, wanted: impl Fn(&Job) -> bool) -> Option<Job> {
        let (client, mut line) = self.lines.pop_front()?;
        if !line.front().is_some_and(&wanted) {
            self.lines.push_front((client, line));
            return None;
        }
        let job = line.pop_front();
        if !line.is_empty() {
            self.lines.push_back((client, line));
        }
        job
    }
}

impl<Job> FairQueue<Job> {
    /// Queues `job` behind the same client's earlier ones. Once the queue
    /// is closed (the worker stopped) the job is dropped, and with it its
    /// reply: the request is answered that the worker stopped.
    pub fn push(&self, client: IpAddr, job: Job) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.closed {
            return;
        }
        match s.lines.iter_mut().find(|(c, _)| *c == client) {
            Some((_, line)) => line.push_back(job),
            None => s.lines.push_back((client, VecDeque::from([job]))),
        }
        self.ready.notify_one();
    }

    /// The next job: the first of the next client's line; waits for one,
    /// and is `None` once the queue is closed and empty.
    pub fn pop(&self) -> Option<Job> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = s.take_turn(|_| true) {
                return Some(job);
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next job (waiting for one, as `pop`), and after it, in the order
    /// `pop` would give them, the jobs waiting that `joins` accepts, up to
    /// `max` in all: a batch, taken without waiting for more and without
    /// passing over any client's turn. `None` once closed and empty.
    pub fn pop_batch(&self, max: usize, joins: impl Fn(&Job, &Job) -> bool) -> Option<Vec<Job>> {
        let first = self.pop()?;
        let mut batch = vec![first];
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while batch.len() < max {
            match s.take_turn(|job| joins(&batch[0], job)) {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        Some(batch)
    }

    /// No more jobs will come: the worker stops once the queue is empty.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_take_turns() {
        let q = FairQueue::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        for j in ["a1", "a2", "a3"] {
            q.push(a, j);
        }
        q.push(b, "b1");
        q.push(b, "b2");
        let order: Vec<&str> = (0..5).map(|_| q.pop().unwrap()).collect();
        assert_eq!(order, ["a1", "b1", "a2", "b2", "a3"]);
        q.close();
        assert!(q.pop().is_none());
        q.push(a, "late");
        assert!(q.pop().is_none(), "a closed queue takes nothing");
    }

    #[test]
    fn a_batch_takes_the_next_turns_while_they_join_and_passes_over_none() {
        let q = FairQueue::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        for j in ["a1", "a2", "a3"] {
            q.push(a, j);
        }
        q.push(b, "b1");
        q.push(b, "x2");
        // "x" jobs join no batch.
        let same_kind = |x: &&str, y: &&str| !x.starts_with('x') && !y.starts_with('x');
        assert_eq!(q.pop_batch(8, same_kind).unwrap(), ["a1", "b1", "a2"], "in turn, up to the job that does not join");
        assert_eq!(q.pop_batch(8, same_kind).unwrap(), ["x2"], "which comes next, alone");
        assert_eq!(q.pop_batch(1, same_kind).unwrap(), ["a3"]);
    }
}
