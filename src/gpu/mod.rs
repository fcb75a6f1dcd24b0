//! GPU plumbing: adapter and device, tensors, pipelines and command
//! recording, kernel parameters, and the timing of recorded work.

mod binding;
mod context;
pub mod counters;
pub mod dispatch;
pub mod half;
pub mod kernel_set;
pub mod params;
pub mod pool;
pub mod readback;
pub mod shaders;
mod tensor;
pub mod timing;

pub use binding::Kernel;
pub use context::{AdapterReport, Gpu, GpuOptions, NO_ADAPTER_HELP};
pub use counters::Counts;
pub use dispatch::{groups, Arg, Launch, Launched, Recorder};
pub use kernel_set::{KernelSet, Split};
pub use params::{Params, Word};
pub use shaders::Shader;
pub use tensor::{numel, Dtype, Tensor};
pub use timing::{BenchCase, BenchRow};
