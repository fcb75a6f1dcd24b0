//! arcface: a GPU compute engine (WGSL compute shaders on wgpu) for training
//! and running face-recognition networks, with a CPU reference for every
//! kernel.
//!
//! The modules are layers, bottom to top; a module only uses the layers
//! below it (ARCHITECTURE.md, checked by `tests/layers.rs`):
//!
//! `gpu` -> `kernels` -> `nn` -> `data` -> `models` -> `io` -> `detect`
//! -> `pipeline` | `recognize` -> `serve` -> `cli`
//!
//! The same crate builds for the browser (wasm32, wgpu on WebGPU): `web`
//! instead of `serve` and `cli`.

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod data;
pub mod detect;
pub mod gpu;
pub mod io;
pub mod kernels;
pub mod models;
pub mod nn;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod recognize;
#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
#[cfg(target_arch = "wasm32")]
pub mod web;
