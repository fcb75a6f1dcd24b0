//! Building blocks of the models: the backend trait (GPU kernels or CPU
//! references, each op with its explicit backward pass), named parameters
//! and what a builder declares about them.

mod backend;
mod cpu_backend;
mod gpu_backend;
mod param_spec;
mod params;

pub use backend::Backend;
pub use cpu_backend::{CpuBackend, CpuTensor};
pub use gpu_backend::{require_f16, GpuBackend};
pub use param_spec::{Init, ParamSpec};
pub use params::{Param, ParamStore};
