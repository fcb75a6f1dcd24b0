//! arcface: a GPU compute engine (WGSL compute shaders on wgpu) for training
//! and running face-recognition networks, with a CPU reference for every
//! kernel.
//!
//! Data flows one way: `gpu` (device, tensors, dispatch) <- `kernels` (one
//! module per op family) <- `gradcheck` / `bench` / the CLI.

pub mod align;
pub mod bench;
pub mod check;
pub mod checkpoint;
pub mod data;
pub mod demo;
pub mod detect;
pub mod evaluate;
pub mod gallery;
pub mod gpu;
pub mod gradcheck;
pub mod graph;
pub mod infer;
pub mod kernels;
pub mod models;
pub mod nn;
pub mod onnx;
pub mod prepare;
pub mod preprocess;
pub mod report;
pub mod serve;
pub mod sweep;
pub mod tensorfile;
pub mod train;
pub mod verify;
