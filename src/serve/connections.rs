//! The table of open connections. It is bounded (`max_connections`), and a
//! full table makes room rather than turning everyone away: the connection
//! that has been idle longest (between requests, or still sending its first
//! request's headers) is told to close, so a few hundred sockets that send
//! nothing cannot keep others out; only when every connection is in the
//! middle of a request is a newcomer answered 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

pub struct Connections {
    max: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Entry>,
}

struct Entry {
    /// A request is being answered.
    busy: bool,
    /// Since when it has been without a request (or since it opened).
    idle_since: Instant,
    close: Arc<Notify>,
}

/// One connection's place in the table, given back when dropped.
pub struct Ticket {
    id: u64,
    conns: Arc<Connections>,
    /// Told when the connection is to close to make room.
    pub close: Arc<Notify>,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections { max: max.max(1), table: Mutex::default() })
    }

    /// A place for a new connection, made by closing the longest-idle one
    /// when the table is full; none when every connection is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.open.len() >= self.max {
            let idlest = t.open.iter().filter(|(_, e)| !e.busy).min_by_key(|(_, e)| e.idle_since).map(|(&id, _)| id)?;
            // Out of the table now: the newcomer takes its place while it closes.
            if let Some(e) = t.open.remove(&idlest) {
                e.close.notify_one();
            }
        }
        let id = t.next;
        t.next += 1;
        let close = Arc::new(Notify::new());
        t.open.insert(id, Entry { busy: false, idle_since: Instant::now(), close: close.clone() });
        Some(Ticket { id, conns: self.clone(), close })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).open.len()
    }
}

impl Ticket {
    /// Marks the connection as answering a request (not to be closed for
    /// room) or as idle again.
    pub fn set_busy(&self, busy: bool) {
        let mut t = self.conns.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = t.open.get_mut(&self.id) {
            e.busy = busy;
            if !busy {
                e.idle_since = Instant::now();
            }
        }
    }

    /// Whether a request is being answered on it.
    pub fn is_busy(&self) -> bool {
        let t = self.conns.table.lock().unwrap_or_else(|e| e.into_inner());
        t.open.get(&self.id).is_some_and(|e| e.busy)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.conns.table.lock().unwrap_or_else(|e| e.into_inner()).open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_closes_the_longest_idle_connection() {
        let c = Connections::new(3);
        let a = c.admit().unwrap();
        let b = c.admit().unwrap();
        let d = c.admit().unwrap();
        a.set_busy(true);
        d.set_busy(false); // idle since later than b
        let e = c.admit().expect("room made");
        assert_eq!(c.open(), 3);
        // b, idle longest, was told to close; a (busy) and d were not.
        assert!(told_to_close(&b) && !told_to_close(&a) && !told_to_close(&d) && !told_to_close(&e));
        d.set_busy(true);
        e.set_busy(true);
        assert!(c.admit().is_none(), "every connection busy: no room");
    }

    fn told_to_close(t: &Ticket) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(1), t.close.notified()).await.is_ok()
        })
    }
}
