//! Building blocks of the models: the backend trait (GPU kernels or CPU
//! references), named parameters, and layers with explicit backward passes.

mod backend;
mod cpu_backend;
mod gpu_backend;
mod layers;
mod params;

pub use backend::Backend;
pub use cpu_backend::{CpuBackend, CpuTensor};
pub use gpu_backend::GpuBackend;
pub use layers::{Block, ConvBn, ConvBnCache, Folded, Init, ParamSpec};
pub use params::{Param, ParamStore};
