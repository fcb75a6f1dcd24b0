//! `arcface serve`: one web page (HTML, CSS and JS embedded in the binary)
//! and a JSON API to recognise faces with the loaded models.
//!
//! GET / (the page), GET /healthz, GET /api/models, GET /api/examples
//! (photos to try), POST /api/predict (multipart: image, model), POST
//! /api/verify (multipart: image_a, image_b, model), POST /api/preview
//! (multipart: image; the decoded photo as PNG, for formats browsers do not
//! show). Bad input gets a 4xx and `{"error": ...}`. HTTP requests are
//! handled by several threads; GPU work goes through one queue
//! (`worker`). Uploads stay in memory and are never written to disk.

pub mod examples;
pub mod multipart;
pub mod worker;

use anyhow::Result;
use std::io::Read;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use tiny_http::{Header, Method, Request, Response, Server};
use worker::{ApiError, Job, ModelInfo};

const PAGE: &str = include_str!("page.html");
/// Threads reading and answering HTTP requests.
const HTTP_THREADS: usize = 8;

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
}

impl Handle {
    /// Serves until the process ends.
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
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
    let jobs = Arc::new(Mutex::new(jobs));
    let models_json = Arc::new(serde_json::to_string(&models)?);
    let mut threads = Vec::new();
    for _ in 0..HTTP_THREADS {
        let (server, jobs, models_json) = (server.clone(), jobs.clone(), models_json.clone());
        let max = opt.max_upload;
        threads.push(std::thread::spawn(move || {
            while let Ok(req) = server.recv() {
                let tx = jobs.lock().map(|j| j.clone());
                match tx {
                    Ok(tx) => handle(req, &tx, &models_json, max),
                    Err(_) => return,
                }
            }
        }));
    }
    Ok(Handle { addr, models, server, threads })
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

fn handle(mut req: Request, jobs: &Sender<Job>, models_json: &str, max_upload: usize) {
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
            let answer = if path == "/api/predict" {
                let Some(image) = form.get("image").cloned() else {
                    return reply_error(req, ApiError::new(400, "no photo uploaded (form field `image`)"));
                };
                let (tx, rx) = channel();
                let _ = jobs.send(Job::Predict { model, image, reply: tx });
                rx.recv().map(|r| r.map(|a| serde_json::to_string(&a).unwrap_or_default()))
            } else {
                let (Some(a), Some(b)) = (form.get("image_a").cloned(), form.get("image_b").cloned()) else {
                    return reply_error(
                        req,
                        ApiError::new(400, "two photos are needed (form fields `image_a`, `image_b`)"),
                    );
                };
                let (tx, rx) = channel();
                let _ = jobs.send(Job::Verify { model, images: [a, b], reply: tx });
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
