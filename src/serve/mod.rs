//! `arcface serve`: one web page (HTML, CSS and JS embedded in the binary)
//! and a JSON API to recognise faces with the loaded models.
//!
//! GET / (the page), GET /healthz, GET /api/models, GET /api/examples
//! (photos to try), POST /api/predict (multipart: image, model), POST
//! /api/verify (multipart: image_a, image_b, model), POST /api/preview
//! (multipart: image; the decoded photo as PNG, for formats browsers do not
//! show). Bad input gets a 4xx and `{"error": ...}`. Each HTTP request has
//! its own thread (at most `MAX_OPEN`); photos are decoded there, refused
//! over the pixel limit from their header (413), and fitted to 2000 pixels
//! a side; at most `MAX_QUEUED` wait for the GPU (503 with Retry-After
//! beyond). GPU work goes through one queue
//! (`worker`). Uploads stay in memory and are never written to disk.

pub mod examples;
pub mod multipart;
pub mod worker;

use anyhow::Result;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use tiny_http::{Header, Method, Request, Response, Server};
use worker::{ApiError, Job, ModelInfo};

const PAGE: &str = include_str!("page.html");
/// Requests being read or answered at once (one thread each).
const MAX_OPEN: usize = 256;

pub struct Options {
    pub bind: String,
    /// Uploads larger than this many bytes are refused (413).
    pub max_upload: usize,
    pub worker: worker::Config,
}

/// A running server.
pub struct Handle {
    pub addr: std::net::SocketAddr,
    pub models: Vec<ModelInfo>,
    server: Arc<Server>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Requests being read or answered.
    open: Arc<AtomicUsize>,
}

/// Stops a server from another thread (a signal handler's).
#[derive(Clone)]
pub struct Stopper(Arc<Server>);

impl Stopper {
    /// No new connections are taken; requests in flight go on.
    pub fn stop(&self) {
        self.0.unblock();
    }
}

impl Handle {
    /// Serves until stopped (`stopper`), then waits up to `drain` for the
    /// requests in flight to be answered; false if some were not.
    pub fn wait(self, drain: std::time::Duration) -> bool {
        for t in self.threads {
            let _ = t.join();
        }
        let until = std::time::Instant::now() + drain;
        while self.open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.open.load(Ordering::SeqCst) == 0
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.server.clone())
    }

    pub fn stop(self) {
        self.server.unblock();
    }
}

/// Loads the models, binds, and starts answering.
pub fn start(opt: Options) -> Result<Handle> {
    let (jobs, models) = worker::start(opt.worker)?;
    let server = Arc::new(Server::http(&opt.bind).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", opt.bind))?);
    let addr = server.server_addr().to_ip().ok_or_else(|| anyhow::anyhow!("not an IP address: {}", opt.bind))?;
    let models_json = Arc::new(serde_json::to_string(&models)?);
    let queued = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let max = opt.max_upload;
    let acceptor = {
        let (server, open) = (server.clone(), open.clone());
        std::thread::spawn(move || {
            // One thread per request, so that a client that stalls its upload
            // holds only its own thread (there is no read deadline yet: see
            // MAX_OPEN); past MAX_OPEN requests, 503 at once.
            while let Ok(req) = server.recv() {
                let Some(slot) = Slot::take(open.clone(), MAX_OPEN) else {
                    reply_busy(req);
                    continue;
                };
                let (tx, models_json, queued) = (jobs.clone(), models_json.clone(), queued.clone());
                std::thread::spawn(move || {
                    let _slot = slot;
                    handle(req, &tx, &queued, &models_json, max);
                });
            }
        })
    };
    let threads = vec![acceptor];
    Ok(Handle { addr, models, server, threads, open })
}

fn json_header() -> Header {
    Header::from_bytes("Content-Type", "application/json").expect("valid header")
}

/// Sent with a Content-Length (tiny_http would switch to chunked encoding
/// above 32 kB, which simple clients handle badly).
fn reply_json(req: Request, status: u16, body: String) {
    let r = Response::from_string(body).with_status_code(status).with_header(json_header());
    let _ = req.respond(r.with_chunked_threshold(usize::MAX));
}

fn reply_error(req: Request, e: ApiError) {
    reply_json(req, e.status, serde_json::json!({ "error": e.message }).to_string());
}

/// Requests decoded and waiting for, or on, the GPU worker; past
/// `MAX_QUEUED` a request is answered 503 at once.
const MAX_QUEUED: usize = 64;

/// One of `max` places counted by a shared counter, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: Arc<AtomicUsize>, max: usize) -> Option<Slot> {
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

fn reply_busy(req: Request) {
    let body = serde_json::json!({ "error": "the server is busy; try again in a second" }).to_string();
    let retry = Header::from_bytes("Retry-After", "1").expect("valid header");
    let _ =
        req.respond(Response::from_string(body).with_status_code(503).with_header(json_header()).with_header(retry));
}

fn handle(mut req: Request, jobs: &Sender<Job>, queued: &Arc<AtomicUsize>, models_json: &str, max_upload: usize) {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::Get, "/") | (Method::Get, "/index.html") => {
            let h = Header::from_bytes("Content-Type", "text/html; charset=utf-8").expect("valid header");
            let _ = req.respond(Response::from_string(PAGE).with_header(h).with_chunked_threshold(usize::MAX));
        }
        (Method::Get, "/healthz") => reply_json(req, 200, r#"{"ok":true}"#.into()),
        (Method::Get, "/api/models") => reply_json(req, 200, models_json.to_string()),
        (Method::Get, "/api/examples") => {
            reply_json(req, 200, serde_json::to_string(&examples::list()).unwrap_or_default())
        }
        (Method::Post, "/api/preview") => {
            let form = match read_form(&mut req, max_upload) {
                Ok(f) => f,
                Err(e) => return reply_error(req, e),
            };
            let Some(image) = form.get("image") else {
                return reply_error(req, ApiError::new(400, "no photo uploaded (form field `image`)"));
            };
            match examples::preview(image) {
                Ok(url) => reply_json(req, 200, serde_json::json!({ "image": url }).to_string()),
                Err(e) => reply_error(req, e),
            }
        }
        (Method::Post, "/api/predict") | (Method::Post, "/api/verify") => {
            let form = match read_form(&mut req, max_upload) {
                Ok(f) => f,
                Err(e) => return reply_error(req, e),
            };
            let model = form.get("model").map(|m| String::from_utf8_lossy(m).trim().to_string()).unwrap_or_default();
            if model.is_empty() {
                return reply_error(req, ApiError::new(400, "no model chosen (form field `model`)"));
            }
            // Decoded here, in the request's thread: a bad or oversized photo
            // never reaches the GPU queue.
            let photo = |field: &str| -> Result<image::RgbImage, ApiError> {
                worker::decode(form.get(field).map_or(&[][..], |v| v.as_slice()))
            };
            let Some(_slot) = Slot::take(queued.clone(), MAX_QUEUED) else {
                return reply_busy(req);
            };
            let answer = if path == "/api/predict" {
                if !form.contains_key("image") {
                    return reply_error(req, ApiError::new(400, "no photo uploaded (form field `image`)"));
                }
                let image = match photo("image") {
                    Ok(img) => img,
                    Err(e) => return reply_error(req, e),
                };
                let (tx, rx) = channel();
                let _ = jobs.send(Job::Predict { model, image, reply: tx });
                rx.recv().map(|r| r.map(|a| serde_json::to_string(&a).unwrap_or_default()))
            } else {
                if !(form.contains_key("image_a") && form.contains_key("image_b")) {
                    return reply_error(
                        req,
                        ApiError::new(400, "two photos are needed (form fields `image_a`, `image_b`)"),
                    );
                }
                let images = match (photo("image_a"), photo("image_b")) {
                    (Ok(a), Ok(b)) => [a, b],
                    (Err(e), _) | (_, Err(e)) => return reply_error(req, e),
                };
                let (tx, rx) = channel();
                let _ = jobs.send(Job::Verify { model, images, reply: tx });
                rx.recv().map(|r| r.map(|a| serde_json::to_string(&a).unwrap_or_default()))
            };
            match answer {
                Ok(Ok(body)) => reply_json(req, 200, body),
                Ok(Err(e)) => reply_error(req, e),
                Err(_) => reply_error(req, ApiError::new(503, "the GPU worker stopped")),
            }
        }
        _ => reply_error(req, ApiError::new(404, format!("no such page: {path}"))),
    }
}

/// The multipart form of a request, refusing bodies over `max` bytes.
fn read_form(req: &mut Request, max: usize) -> Result<std::collections::HashMap<String, Vec<u8>>, ApiError> {
    let too_big = || ApiError::new(413, format!("the upload is over the size limit ({} MB)", max / 1_000_000));
    if req.body_length().is_some_and(|n| n > max + 64 * 1024) {
        return Err(too_big());
    }
    let ct = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .map(|h| h.value.as_str().to_string())
        .unwrap_or_default();
    let boundary =
        multipart::boundary(&ct).ok_or_else(|| ApiError::new(400, "expected a multipart/form-data upload"))?;
    let mut body = Vec::new();
    req.as_reader()
        .take((max + 64 * 1024 + 1) as u64)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::new(400, format!("reading the upload: {e}")))?;
    if body.len() > max + 64 * 1024 {
        return Err(too_big());
    }
    let form = multipart::parse(&body, &boundary);
    for (k, v) in &form {
        if k.starts_with("image") && v.len() > max {
            return Err(too_big());
        }
    }
    Ok(form)
}
