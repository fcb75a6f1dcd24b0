//! Which shape of kernel a device runs, chosen once per device from its
//! adapter (no autotuning) and overridable with `--kernels` /
//! `ARCFACE_KERNELS`, so both sets can be tested and benchmarked anywhere.
//!
//! - `Gpu`: for discrete and integrated GPUs, which need hundreds of
//!   thousands of invocations in flight: long reductions are split into
//!   slices summed by a second dispatch, matrix products tile through
//!   workgroup memory.
//! - `Cpu`: for adapters that are a CPU (lavapipe), which run one workgroup
//!   per thread, 8 invocations per vector: no workgroup memory or barriers
//!   in the products, narrow workgroups where a reduction needs a barrier,
//!   few long-running invocations, operands uniform across the lanes loaded
//!   once.
//!
//! How a reduction is cut (`Split::for_reduction`) and how wide a reducing
//! workgroup is (`KernelSet::reduction_width`) are decided here; a kernel
//! family picks its variant for a shape from `Gpu::kernels`.

use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelSet {
    Gpu,
    Cpu,
}

impl KernelSet {
    /// The set for an adapter of this type.
    pub fn for_device(t: wgpu::DeviceType) -> KernelSet {
        match t {
            wgpu::DeviceType::Cpu => KernelSet::Cpu,
            _ => KernelSet::Gpu,
        }
    }

    pub fn parse(s: &str, flag: &str) -> Result<KernelSet> {
        match s.to_ascii_lowercase().as_str() {
            "gpu" => Ok(KernelSet::Gpu),
            "cpu" => Ok(KernelSet::Cpu),
            other => bail!("{flag}: unknown kernel set `{other}` (expected gpu or cpu)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KernelSet::Gpu => "gpu",
            KernelSet::Cpu => "cpu",
        }
    }

    pub const ALL: [KernelSet; 2] = [KernelSet::Gpu, KernelSet::Cpu];

    /// Invocations of a workgroup that reduces a channel or a row through
    /// workgroup memory. On lavapipe every 8 lanes of a workgroup with a
    /// barrier become a coroutine: two vectors' worth keep the switching
    /// cheap (MobileFaceNet's fused batch norms ran twice as fast at 16 as
    /// at 256); a GPU wants its 256.
    pub fn reduction_width(self) -> u32 {
        match self {
            KernelSet::Gpu => 256,
            KernelSet::Cpu => 16,
        }
    }
}

/// A reduction of `len` terms for each of `outputs` results, cut into
/// `slices` slices of at most `per_slice` terms. With more than one slice,
/// each slice's partial results go to a scratch tensor and a second
/// dispatch sums them in slice order (deterministic, no atomics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub slices: usize,
    pub per_slice: usize,
}

/// GPU set: the longest loop one invocation of a sliced reduction runs...
const GPU_MAX_SERIAL: usize = 1024;
/// ...the shortest slice worth a separate partial sum...
const GPU_MIN_SERIAL: usize = 32;
/// ...and the invocations to aim for (an H200 holds about 270,000 resident
/// threads; a small GPU is full well before).
const GPU_TARGET_INVOCATIONS: usize = 1 << 18;
/// Slices beyond this are only taken when the serial bound needs them: the
/// second pass loops over the slices with few invocations (one per output).
const WANTED_SLICES: usize = 256;
/// CPU set: the longest loop of one invocation. llvmpipe ends a shader's
/// loops after 65535 iterations in all (`Gpu::max_loop_trips`); half of it
/// leaves room for the invocation's other loops.
pub const CPU_MAX_SERIAL: usize = 32_768;
/// More slices than this would make the second dispatch the long loop.
const MAX_SLICES: usize = GPU_MAX_SERIAL;

impl Split {
    /// One slice: the reduction runs whole in each invocation.
    pub fn whole(len: usize) -> Split {
        Split { slices: 1, per_slice: len.max(1) }
    }

    /// How `set` cuts a reduction of `len` terms into `outputs` results.
    /// The CPU set splits only reductions longer than `CPU_MAX_SERIAL`:
    /// lavapipe's few threads are kept busy by the outputs alone, and a
    /// second pass would only add memory traffic.
    pub fn for_reduction(set: KernelSet, len: usize, outputs: usize) -> Split {
        let len = len.max(1);
        match set {
            KernelSet::Cpu => Split::slices(len, len.div_ceil(CPU_MAX_SERIAL)),
            KernelSet::Gpu => {
                let needed = len.div_ceil(GPU_MAX_SERIAL);
                let wanted = GPU_TARGET_INVOCATIONS
                    .div_ceil(outputs.max(1))
                    .min(len.div_ceil(GPU_MIN_SERIAL))
                    .min(WANTED_SLICES);
                Split::slices(len, needed.max(wanted).clamp(1, MAX_SLICES))
            }
        }
    }

    /// `slices` slices (fewer if some would be empty) of equal length.
    pub fn slices(len: usize, slices: usize) -> Split {
        let per_slice = len.max(1).div_ceil(slices.max(1));
        Split { slices: len.max(1).div_ceil(per_slice), per_slice }
    }

    pub fn is_split(&self) -> bool {
        self.slices > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_splits_only_past_its_bound_and_gpu_bounds_the_serial_loop() {
        assert_eq!(Split::for_reduction(KernelSet::Cpu, CPU_MAX_SERIAL, 9), Split::whole(CPU_MAX_SERIAL));
        let long = Split::for_reduction(KernelSet::Cpu, 1 << 20, 9);
        assert_eq!(long, Split { slices: (1 << 20) / CPU_MAX_SERIAL, per_slice: CPU_MAX_SERIAL });
        for (len, outputs) in [(100_352, 576), (401_408, 80), (7, 3), (1 << 24, 1), (3136, 1 << 20)] {
            let s = Split::for_reduction(KernelSet::Gpu, len, outputs);
            assert!(s.slices * s.per_slice >= len && (s.slices - 1) * s.per_slice < len, "{len} {s:?}");
            assert!(s.per_slice <= GPU_MAX_SERIAL.max(len.div_ceil(MAX_SLICES)), "{len} {s:?}");
        }
        // A small reduction with few outputs is still cut (so the checks
        // exercise the sliced path on small shapes).
        assert!(Split::for_reduction(KernelSet::Gpu, 198, 45).is_split());
        // Many outputs and a short reduction: no slices.
        assert!(!Split::for_reduction(KernelSet::Gpu, 64, 1 << 20).is_split());
    }
}
