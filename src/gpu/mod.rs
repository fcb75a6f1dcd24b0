//! GPU plumbing: adapter and device, tensors, pipelines and command recording.

mod context;
pub mod dispatch;
pub mod shaders;
mod tensor;

pub use context::{AdapterReport, Gpu, GpuOptions, NO_ADAPTER_HELP};
pub use dispatch::{groups, Arg, Kernel, Params, Recorder};
pub use shaders::Shader;
pub use tensor::{numel, Tensor};
