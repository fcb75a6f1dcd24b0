//! Files: named tensors (safetensors), checkpoints of networks trained here,
//! ONNX models and their import, and the one way to open "a checkpoint or
//! an imported graph".

pub mod checkpoint;
pub mod model_file;
pub mod onnx;
pub mod onnx_export;
pub mod onnx_import;
pub mod tensorfile;
