//! One HTTP request, from its headers to its answer: the page, the JSON
//! API, and the bounds on what a request may hold while it is answered
//! (`Limits`). Runs on the server's async threads; decoding runs on the
//! blocking pool and models on the GPU thread (`worker`).

use super::limits::{Limits, Slot, DENSITY_FROM_PIXELS, FORM_OVERHEAD, MAX_DECODING, MAX_PIXELS_PER_BYTE};
use super::queue::FairQueue;
use super::worker::{self, ApiError, Job, ModelInfo};
use super::{examples, multipart};
use crate::data::photo;
use crate::recognize::gallery;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, IF_NONE_MATCH, RETRY_AFTER, VARY,
};
use hyper::{Method, Request, Response};
use image::RgbImage;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Semaphore, SemaphorePermit};

const PAGE: &str = include_str!("page.html");
/// The engine for the browser (scripts/build-web; tests/web.rs checks it is
/// built from the current sources).
const BUNDLE_JS: &str = include_str!("../../web/pkg/arcface.js");
const BUNDLE_WASM: &[u8] = include_bytes!("../../web/pkg/arcface_bg.wasm");

pub type Answer = Response<Full<Bytes>>;
type Form = HashMap<String, Vec<u8>>;

/// A file the browser fetches once and then revalidates by its ETag.
pub struct Download {
    bytes: Bytes,
    etag: String,
}

impl Download {
    pub fn read(path: &Path) -> anyhow::Result<Download> {
        let bytes = crate::data::bounded::read(path, crate::data::bounded::Kind::Model)?;
        let etag = format!("\"{}\"", gallery::fingerprint_bytes(&bytes));
        Ok(Download { bytes: Bytes::from(bytes), etag })
    }

    /// The file, or 304 when the request names its ETag (the browser keeps
    /// it and asks again with If-None-Match rather than fetching it each
    /// visit).
    fn answer(&self, req: &Request<Incoming>) -> Result<Answer, ApiError> {
        let cached = req.headers().get(IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == self.etag.as_bytes());
        let mut a = if cached {
            let mut a = Response::new(Full::new(Bytes::new()));
            *a.status_mut() = hyper::StatusCode::NOT_MODIFIED;
            a
        } else {
            file(self.bytes.clone(), "application/octet-stream")
        };
        a.headers_mut().insert(ETAG, HeaderValue::from_str(&self.etag).map_err(internal)?);
        a.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Ok(a)
    }
}

/// What every request of one server shares.
pub struct Shared {
    jobs: Arc<FairQueue<Job>>,
    /// Requests in flight per client address.
    clients: Mutex<HashMap<IpAddr, usize>>,
    /// Model files by name, and the gallery: what the browser fetches.
    weights: HashMap<String, Download>,
    gallery: Option<Download>,
    models_json: String,
    examples_json: String,
    pub limits: Limits,
    /// Upload bytes in memory, in KiB.
    uploads: Semaphore,
    upload_kib: u32,
    /// Pixels being decoded.
    decoding: Semaphore,
    decode_pixels: u32,
    /// Requests past reading their upload and not yet answered, and their
    /// photos' pixels once fitted.
    queued: Arc<AtomicUsize>,
    queue: Semaphore,
    queue_pixels: u32,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // No request is left to queue a job: the worker may stop.
        self.jobs.close();
    }
}

impl Shared {
    pub fn new(
        jobs: Arc<FairQueue<Job>>,
        models: &[ModelInfo],
        weights: HashMap<String, Download>,
        gallery: Option<Download>,
        limits: Limits,
    ) -> anyhow::Result<Shared> {
        let upload_kib = (limits.upload_budget.max(2 * (limits.max_upload + FORM_OVERHEAD)) / 1024) as u32;
        let decode_pixels = photo::max_pixels().min(u32::MAX as u64 / 2) as u32;
        // At least one request of two photos fits in the queue.
        let full = photo::DETECT_MAX_SIDE as u64 * photo::DETECT_MAX_SIDE as u64 * 2;
        let queue_pixels = limits.queued_pixels.clamp(full, u32::MAX as u64 / 2) as u32;
        Ok(Shared {
            jobs,
            clients: Mutex::default(),
            weights,
            gallery,
            models_json: serde_json::to_string(models)?,
            examples_json: serde_json::to_string(&examples::list())?,
            limits,
            uploads: Semaphore::new(upload_kib as usize),
            upload_kib,
            decoding: Semaphore::new(decode_pixels as usize),
            decode_pixels,
            queued: Arc::default(),
            queue: Semaphore::new(queue_pixels as usize),
            queue_pixels,
        })
    }
}

/// The answer to one request; `last` closes the connection after it.
/// `client` is the address it came from (its share of the server).
pub async fn answer(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    last: bool,
    client: IpAddr,
) -> Result<Answer, Infallible> {
    let allow = allowed(req.uri().path());
    let mut a = route(req, &shared, client).await.unwrap_or_else(error);
    if a.status() == hyper::StatusCode::METHOD_NOT_ALLOWED {
        a.headers_mut().insert(ALLOW, HeaderValue::from_static(allow.unwrap_or("GET, HEAD")));
    }
    if last {
        a.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(a)
}

/// The answer to every request on a connection past `max_connections`.
pub fn busy() -> Answer {
    error(busy_error())
}

fn json(status: u16, body: String) -> Answer {
    let mut a = Response::new(Full::new(Bytes::from(body)));
    *a.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    a.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    a
}

fn error(e: ApiError) -> Answer {
    let mut a = json(e.status, serde_json::json!({ "error": e.message }).to_string());
    if e.status == 503 || e.status == 429 {
        a.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    a
}

fn busy_error() -> ApiError {
    ApiError::new(503, "the server is busy; try again in a second")
}

/// The methods a path answers, if it is one of ours.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/api/predict" | "/api/verify" | "/api/preview" => Some("POST"),
        "/" | "/index.html" | "/healthz" | "/api/models" | "/api/examples" | "/api/gallery" => Some("GET, HEAD"),
        "/pkg/arcface.js" | "/pkg/arcface_bg.wasm" => Some("GET, HEAD"),
        p if p.starts_with("/api/models/") && p.ends_with("/weights") => Some("GET, HEAD"),
        _ => None,
    }
}

/// One of a client's places among the requests in flight, given back when
/// dropped.
struct ClientSlot<'s> {
    shared: &'s Shared,
    client: IpAddr,
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        let mut m = self.shared.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.client);
            }
        }
    }
}

/// A place for one more request of `client` in flight, or 429 when it has
/// `max_per_client` already: one address cannot hold the whole server.
fn client_slot(shared: &Shared, client: IpAddr) -> Result<ClientSlot<'_>, ApiError> {
    let mut m = shared.clients.lock().unwrap_or_else(|e| e.into_inner());
    let n = m.entry(client).or_insert(0);
    if *n >= shared.limits.max_per_client {
        return Err(ApiError::new(
            429,
            format!("{} requests from your address are in progress already; wait for their answers", *n),
        ));
    }
    *n += 1;
    Ok(ClientSlot { shared, client })
}

async fn route(req: Request<Incoming>, shared: &Shared, client: IpAddr) -> Result<Answer, ApiError> {
    let path = req.uri().path().to_string();
    // HEAD is GET without the body (hyper leaves the body out).
    let method = if req.method() == Method::HEAD { Method::GET } else { req.method().clone() };
    let _mine = if method == Method::POST { Some(client_slot(shared, client)?) } else { None };
    match (&method, path.as_str()) {
        (&Method::GET, "/" | "/index.html") => {
            Ok(file(Bytes::from_static(PAGE.as_bytes()), "text/html; charset=utf-8"))
        }
        (&Method::GET, "/healthz") => Ok(json(200, r#"{"ok":true}"#.into())),
        (&Method::GET, "/api/models") => Ok(json(200, shared.models_json.clone())),
        (&Method::GET, "/api/examples") => Ok(json(200, shared.examples_json.clone())),
        (&Method::GET, "/pkg/arcface.js") => Ok(file(Bytes::from_static(BUNDLE_JS.as_bytes()), "text/javascript")),
        (&Method::GET, "/pkg/arcface_bg.wasm") => {
            // Gzipped once, on the first request (0.3 s, off the network
            // threads): 4.7 MB becomes 2.75 MB.
            static GZIPPED: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
            let gzip =
                req.headers().get(ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("gzip"));
            let mut a = if gzip {
                let bytes = tokio::task::spawn_blocking(|| GZIPPED.get_or_init(|| gzipped(BUNDLE_WASM)).clone())
                    .await
                    .map_err(internal)?;
                let mut a = file(bytes, "application/wasm");
                a.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                a
            } else {
                file(Bytes::from_static(BUNDLE_WASM), "application/wasm")
            };
            a.headers_mut().insert(VARY, HeaderValue::from_static("Accept-Encoding"));
            Ok(a)
        }
        (&Method::GET, "/api/gallery") => shared
            .gallery
            .as_ref()
            .ok_or_else(|| ApiError::new(404, "no gallery: the server was started without --gallery"))?
            .answer(&req),
        (&Method::GET, p) if p.starts_with("/api/models/") && p.ends_with("/weights") => {
            let name = &p["/api/models/".len()..p.len() - "/weights".len()];
            let d = shared.weights.get(name).ok_or_else(|| ApiError::new(404, format!("unknown model `{name}`")))?;
            d.answer(&req)
        }
        (&Method::POST, "/api/preview") => {
            let (mut form, upload) = read_form(req, shared).await?;
            let image = take(&mut form, "image", "no photo uploaded (form field `image`)")?;
            let ([img], _queued) = decode(shared, [image]).await?;
            drop(upload);
            let url = tokio::task::spawn_blocking(move || examples::preview(img)).await.map_err(internal)?;
            Ok(json(200, serde_json::json!({ "image": url }).to_string()))
        }
        (&Method::POST, "/api/predict") => {
            let (mut form, upload) = read_form(req, shared).await?;
            let model = model_field(&form)?;
            let image = take(&mut form, "image", "no photo uploaded (form field `image`)")?;
            let ([image], _queued) = decode(shared, [image]).await?;
            drop(upload);
            let (reply, answer) = oneshot::channel();
            gpu(shared, client, Job::Predict { model, image, reply }, answer).await
        }
        (&Method::POST, "/api/verify") => {
            let (mut form, upload) = read_form(req, shared).await?;
            let model = model_field(&form)?;
            let two = "two photos are needed (form fields `image_a`, `image_b`)";
            let photos = [take(&mut form, "image_a", two)?, take(&mut form, "image_b", two)?];
            let (images, _queued) = decode(shared, photos).await?;
            drop(upload);
            let (reply, answer) = oneshot::channel();
            gpu(shared, client, Job::Verify { model, images, reply }, answer).await
        }
        _ if allowed(&path).is_some() => Err(ApiError::new(405, format!("{path} does not answer {}", req.method()))),
        _ => Err(ApiError::new(404, format!("no such page: {path}"))),
    }
}

fn gzipped(bytes: &'static [u8]) -> Bytes {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).and_then(|_| gz.finish()).map(Bytes::from).unwrap_or_else(|_| Bytes::from_static(bytes))
}

fn file(bytes: Bytes, content_type: &'static str) -> Answer {
    let mut a = Response::new(Full::new(bytes));
    a.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    a
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(500, format!("{e}"))
}

fn take(form: &mut Form, field: &str, missing: &str) -> Result<Vec<u8>, ApiError> {
    form.remove(field).ok_or_else(|| ApiError::new(400, missing))
}

fn model_field(form: &Form) -> Result<String, ApiError> {
    let model = form.get("model").map(|m| String::from_utf8_lossy(m).trim().to_string()).unwrap_or_default();
    if model.is_empty() {
        return Err(ApiError::new(400, "no model chosen (form field `model`)"));
    }
    Ok(model)
}

/// Hands a job to the GPU thread and waits for its answer.
async fn gpu<A: serde::Serialize>(
    shared: &Shared,
    client: IpAddr,
    job: Job,
    answer: oneshot::Receiver<Result<A, ApiError>>,
) -> Result<Answer, ApiError> {
    let stopped = || ApiError::new(503, "the GPU worker stopped");
    shared.jobs.push(client, job);
    let a = answer.await.map_err(|_| stopped())??;
    Ok(json(200, serde_json::to_string(&a).map_err(internal)?))
}

/// The multipart form of a request, with its share of the upload budget
/// (held until the photos are decoded). Refused: a declared length over
/// the limit at once (413), a body that grows past it (413), one that does
/// not arrive within `body_timeout` (408), and any upload while the budget
/// is spent (503).
async fn read_form<'s>(req: Request<Incoming>, shared: &'s Shared) -> Result<(Form, SemaphorePermit<'s>), ApiError> {
    let max = shared.limits.max_upload;
    let cap = max + FORM_OVERHEAD;
    let too_big = || ApiError::new(413, format!("the upload is over the size limit ({} MB)", max / 1_000_000));
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let ct = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary =
        multipart::boundary(ct).ok_or_else(|| ApiError::new(400, "expected a multipart/form-data upload"))?;
    // The body and, while it is split, its fields: twice its length.
    let kib = (2 * declared.unwrap_or(cap)).div_ceil(1024).clamp(1, shared.upload_kib as usize) as u32;
    let permit = shared.uploads.try_acquire_many(kib).map_err(|_| busy_error())?;
    let body = Limited::new(req.into_body(), cap).collect();
    let body = match tokio::time::timeout(shared.limits.body_timeout, body).await {
        Err(_) => {
            let s = shared.limits.body_timeout.as_secs_f64();
            return Err(ApiError::new(408, format!("the upload did not arrive within {s} s")));
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_big()),
        Ok(Err(e)) => return Err(ApiError::new(400, format!("reading the upload: {e}"))),
        Ok(Ok(b)) => b.to_bytes(),
    };
    let form = multipart::parse(&body, &boundary).map_err(|e| ApiError::new(400, e))?;
    if form.iter().any(|(k, v)| k.starts_with("image") && v.len() > max) {
        return Err(too_big());
    }
    Ok((form, permit))
}

/// A request's place in the queue for the GPU: counted, and its photos'
/// pixels held against `queued_pixels`, until it is answered.
struct Queued<'s> {
    _slot: Slot,
    _pixels: SemaphorePermit<'s>,
}

/// Decodes uploads off the async threads. Each is refused from its header
/// first; then the request takes its place in the queue (503 when full)
/// and waits while other decodes hold the pixel budget.
async fn decode<'s, const N: usize>(
    shared: &'s Shared,
    uploads: [Vec<u8>; N],
) -> Result<([RgbImage; N], Queued<'s>), ApiError> {
    let (mut pixels, mut fitted) = (0u64, 0u64);
    for u in &uploads {
        let (w, h) = worker::dimensions(u)?;
        let declared = w as u64 * h as u64;
        if declared > DENSITY_FROM_PIXELS && declared > u.len() as u64 * MAX_PIXELS_PER_BYTE {
            return Err(ApiError::new(
                422,
                format!(
                    "the photo declares {w} x {h} pixels in {} bytes: over {MAX_PIXELS_PER_BYTE} pixels a byte, \
                     which no camera's photo reaches (a damaged or crafted file)",
                    u.len()
                ),
            ));
        }
        let (fw, fh) = photo::fitted_size(w, h, photo::DETECT_MAX_SIDE);
        pixels += w as u64 * h as u64;
        fitted += fw as u64 * fh as u64;
    }
    let slot = Slot::take(shared.queued.clone(), shared.limits.max_queued).ok_or_else(busy_error)?;
    let fitted = fitted.clamp(1, shared.queue_pixels as u64) as u32;
    let queued = Queued { _slot: slot, _pixels: shared.queue.try_acquire_many(fitted).map_err(|_| busy_error())? };
    let floor = shared.decode_pixels as u64 / MAX_DECODING;
    let permits = pixels.clamp(floor.max(1), shared.decode_pixels as u64) as u32;
    let _decoding = shared.decoding.acquire_many(permits).await.map_err(internal)?;
    let images = tokio::task::spawn_blocking(move || uploads.map(|u| worker::decode(&u))).await.map_err(internal)?;
    let images: Vec<RgbImage> = images.into_iter().collect::<Result<_, _>>()?;
    Ok((images.try_into().map_err(|_| internal("decode lost a photo"))?, queued))
}
