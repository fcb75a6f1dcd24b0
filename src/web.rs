//! The engine in the browser: wasm32 with wgpu on WebGPU, the same
//! detector, models and kernels as the native build, every read-back
//! awaited (`recognize::photo`). JavaScript sees one class, `Engine`:
//! `Engine.open()`, then `load(name, bytes)` per model file (and
//! `load_gallery(bytes)` for embedding models), and
//! `recognize(name, photo)` / `embed(name, photo)` per photo, each a
//! promise. Built with `cargo rustc --lib --target wasm32-unknown-unknown
//! --crate-type cdylib` and wasm-bindgen.

use crate::data::photo;
use crate::detect::{Detector, Options};
use crate::gpu::{Gpu, GpuOptions};
use crate::recognize::gallery::Gallery;
use crate::recognize::photo as recognition;
use crate::recognize::session::Session;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

struct Inner {
    detector: Detector<'static>,
    models: HashMap<String, Session<'static>>,
    /// Names people for embedding models (`load_gallery`).
    gallery: Option<Gallery>,
}

/// The GPU, the detector and the loaded models of one page.
#[wasm_bindgen]
pub struct Engine {
    gpu: &'static Gpu,
    inner: Rc<RefCell<Inner>>,
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsValue::from(js_sys::Error::new(&e.to_string()))
}

/// One photo at a time: the page waits for each answer.
const BUSY: &str = "the engine is busy with another photo";

fn now_ms() -> f64 {
    js_sys::Date::now()
}

#[wasm_bindgen]
impl Engine {
    /// WebGPU's device and the face detector (its weights are in the
    /// bundle). Rejects where the browser has no WebGPU.
    pub async fn open() -> Result<Engine, JsValue> {
        let gpu = Gpu::with_options_async(&GpuOptions::default()).await.map_err(js_error)?;
        // The page lives as long as the engine: the GPU is never dropped.
        let gpu: &'static Gpu = Box::leak(Box::new(gpu));
        let detector = Detector::open(gpu, None, Options::default()).map_err(js_error)?;
        let inner = Inner { detector, models: HashMap::new(), gallery: None };
        Ok(Engine { gpu, inner: Rc::new(RefCell::new(inner)) })
    }

    /// The adapter's name (browsers may keep it to themselves: empty).
    pub fn adapter(&self) -> String {
        self.gpu.info.name.clone()
    }

    /// Loads a model file's bytes (a checkpoint or an imported network) as
    /// `name`.
    pub fn load(&self, name: String, bytes: Vec<u8>) -> js_sys::Promise {
        let (gpu, inner) = (self.gpu, self.inner.clone());
        future_to_promise(async move {
            let s = Session::from_bytes(gpu, Path::new(&name), &bytes).await.map_err(js_error)?;
            inner.borrow_mut().models.insert(name, s);
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Loads a gallery file's bytes (from `arcface enroll`): embedding
    /// models name its people.
    pub fn load_gallery(&self, bytes: Vec<u8>) -> Result<(), JsValue> {
        let g = Gallery::parse(Path::new("gallery"), &bytes).map_err(js_error)?;
        self.inner.try_borrow_mut().map_err(|_| js_error(BUSY))?.gallery = Some(g);
        Ok(())
    }

    /// Who is in `photo` (file bytes) by model `name`: a JSON string
    /// `{person, probability, top, face: {box, landmarks}, device, ms}`.
    pub fn recognize(&self, name: String, photo: Vec<u8>) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let started = now_ms();
            let img = photo::decode(&photo, photo::max_pixels()).map_err(js_error)?;
            let img = photo::fit(img, photo::DETECT_MAX_SIDE);
            let mut guard = inner.try_borrow_mut().map_err(|_| js_error(BUSY))?;
            let Inner { detector, models, gallery } = &mut *guard;
            let s = models.get_mut(&name).ok_or_else(|| js_error(format!("no model `{name}` loaded")))?;
            let (a, found) =
                recognition::recognize(s, Some(detector), gallery.as_ref(), &img, 5).await.map_err(js_error)?;
            let answer = serde_json::json!({
                "person": a.person,
                "probability": a.top[0].probability,
                "threshold": a.threshold,
                "top": a.top,
                "face": found.map(|f| serde_json::json!({ "box": f.face.bbox, "landmarks": f.face.landmarks })),
                "device": "browser",
                "ms": now_ms() - started,
            });
            Ok(JsValue::from_str(&answer.to_string()))
        })
    }

    /// The L2-normalised embedding of the face in `photo` by model `name`
    /// (a Float32Array).
    pub fn embed(&self, name: String, photo: Vec<u8>) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let img = photo::decode(&photo, photo::max_pixels()).map_err(js_error)?;
            let img = photo::fit(img, photo::DETECT_MAX_SIDE);
            let mut guard = inner.try_borrow_mut().map_err(|_| js_error(BUSY))?;
            let Inner { detector, models, .. } = &mut *guard;
            let s = models.get_mut(&name).ok_or_else(|| js_error(format!("no model `{name}` loaded")))?;
            let (e, _) = recognition::embed(s, Some(detector), &img).await.map_err(js_error)?;
            Ok(js_sys::Float32Array::from(e.as_slice()).into())
        })
    }
}
