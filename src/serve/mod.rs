//! `arcface serve`: one web page (HTML, CSS and JS embedded in the binary)
//! and a JSON API to recognise faces with the loaded models.
//!
//! GET / (the page), GET /healthz, GET /api/models, GET /api/examples
//! (photos to try), POST /api/predict (multipart: image, model), POST
//! /api/verify (multipart: image_a, image_b, model), POST /api/preview
//! (multipart: image; the decoded photo as PNG, for formats browsers do not
//! show). Bad input gets a 4xx and `{"error": ...}`; a full server 503 with
//! Retry-After. HTTP/1.1 by hyper on a small tokio runtime: connections,
//! header and body deadlines, upload bytes, pixels being decoded and the
//! GPU queue are all bounded (`Limits`); photos are refused over the pixel
//! limit from their header (413) and fitted to 2000 pixels a side; GPU work
//! goes through one queue (`worker`). Uploads stay in memory and are never
//! written to disk.

mod connections;
pub mod examples;
pub mod limits;
pub mod multipart;
mod queue;
mod routes;
pub mod worker;

use anyhow::{Context, Result};
use connections::Connections;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
pub use limits::Limits;
use routes::{Download, Shared};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use worker::ModelInfo;

pub struct Options {
    pub bind: String,
    pub limits: Limits,
    pub worker: worker::Config,
}

/// A running server.
pub struct Handle {
    pub addr: std::net::SocketAddr,
    pub models: Vec<ModelInfo>,
    stopper: Stopper,
    events: Receiver<Event>,
}

enum Event {
    /// No more connections are taken.
    Stopped,
    /// Every connection is closed.
    Drained,
}

/// Stops a server from another thread (a signal handler's).
#[derive(Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    /// No new connections are taken; requests in flight go on.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl Handle {
    /// Serves until stopped (`stopper`), then waits up to `drain` for the
    /// requests in flight to be answered; false if some were not.
    pub fn wait(self, drain: Duration) -> bool {
        loop {
            match self.events.recv() {
                Ok(Event::Stopped) => break,
                Ok(Event::Drained) => return true,
                Err(_) => return false,
            }
        }
        matches!(self.events.recv_timeout(drain), Ok(Event::Drained))
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    pub fn stop(self) {
        self.stopper.stop();
    }
}

/// Loads the models, binds, and starts answering.
pub fn start(opt: Options) -> Result<Handle> {
    // The files the browser fetches to run the models on its own GPU.
    let mut weights = HashMap::new();
    for (name, path) in &opt.worker.models {
        weights.insert(name.clone(), Download::read(path).with_context(|| format!("model {name}"))?);
    }
    let gallery = opt.worker.gallery.as_deref().map(Download::read).transpose()?;
    let (jobs, models) = worker::start(opt.worker)?;
    let listener = std::net::TcpListener::bind(&opt.bind).with_context(|| format!("cannot listen on {}", opt.bind))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(jobs, &models, weights, gallery, opt.limits)?);
    // Two threads do all the network work; decoding runs on the blocking
    // pool (bounded by the pixel budget), the models on the GPU thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(limits::MAX_DECODING as usize + 4)
        .thread_name("arcface-serve")
        .enable_all()
        .build()?;
    let (stop, stopped) = watch::channel(false);
    let (events_tx, events) = channel();
    std::thread::spawn(move || {
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a listener taken from std");
            let graceful = serve(listener, shared, stopped).await;
            let _ = events_tx.send(Event::Stopped);
            graceful.shutdown().await;
            let _ = events_tx.send(Event::Drained);
        });
        rt.shutdown_timeout(Duration::from_secs(1));
    });
    Ok(Handle { addr, models, stopper: Stopper(Arc::new(stop)), events })
}

/// Takes connections until `stop` says so; returns the connections still
/// open, to be drained.
async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let table = Connections::new(shared.limits.max_connections);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, most likely: let some close.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let limits = &shared.limits;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(64 * 1024);
        let io = TokioIo::new(stream);
        match table.admit() {
            Some(ticket) => {
                let ticket = Arc::new(ticket);
                let (shared, served, most) =
                    (shared.clone(), Arc::new(AtomicUsize::new(0)), limits.requests_per_connection);
                let on_request = ticket.clone();
                let conn = http.serve_connection(
                    io,
                    service_fn(move |req| {
                        let last = served.fetch_add(1, Ordering::Relaxed) + 1 >= most;
                        let (ticket, shared) = (on_request.clone(), shared.clone());
                        ticket.set_busy(true);
                        async move {
                            let a = routes::answer(req, shared, last, peer.ip()).await;
                            ticket.set_busy(false);
                            a
                        }
                    }),
                );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    loop {
                        tokio::select! {
                            _ = &mut conn => break,
                            // Told to make room: an idle connection closes
                            // (dropped), one answering a request goes on.
                            _ = ticket.close.notified() => if !ticket.is_busy() { break },
                        }
                    }
                });
            }
            None => {
                // Past the connection limit: its request answered 503 at
                // once, then closed.
                http.keep_alive(false).header_read_timeout(Duration::from_secs(1));
                let conn = http
                    .serve_connection(io, service_fn(|_| async { Ok::<_, std::convert::Infallible>(routes::busy()) }));
                tokio::spawn(graceful.watch(conn));
            }
        }
    }
    graceful
}
