//! Adapter selection and device creation.
//!
//! Policy: only Vulkan, Metal and DX12 are considered (wgpu's GL backend is not
//! compiled in, so there is no silent fallback to it). Hardware adapters are
//! preferred over software ones; `--backend` / `ARCFACE_BACKEND` and
//! `--adapter` / `ARCFACE_ADAPTER` override the choice. The device is created
//! with the adapter's own limits, not wgpu's conservative defaults, so that
//! large storage bindings and many workgroups per dimension are available.

use super::counters::{Counters, Event};
use super::kernel_set::KernelSet;
use super::pool::Pool;
use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use std::sync::Mutex;

/// Optional inputs one dispatch may leave unbound.
const PLACEHOLDERS: usize = 4;

/// How to pick an adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// `vulkan`, `metal` or `dx12`; `None` means all three.
    pub backend: Option<String>,
    /// Case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
    /// `gpu` or `cpu`: the kernel set, instead of the one for the adapter.
    pub kernels: Option<String>,
}

impl GpuOptions {
    /// Options from `ARCFACE_BACKEND` and `ARCFACE_ADAPTER`.
    pub fn from_env() -> Self {
        GpuOptions {
            backend: std::env::var("ARCFACE_BACKEND").ok().filter(|s| !s.is_empty()),
            adapter: std::env::var("ARCFACE_ADAPTER").ok().filter(|s| !s.is_empty()),
            kernels: std::env::var("ARCFACE_KERNELS").ok().filter(|s| !s.is_empty()),
        }
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    fn backends(&self) -> Result<wgpu::Backends> {
        Ok(match self.backend.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
            Some("vulkan") => wgpu::Backends::VULKAN,
            Some("metal") => wgpu::Backends::METAL,
            Some("dx12") => wgpu::Backends::DX12,
            Some(other) => {
                bail!("--backend / ARCFACE_BACKEND: unknown backend `{other}` (expected vulkan, metal or dx12)")
            }
        })
    }
}

/// The message for "no usable adapter": what is missing and the one command
/// that fixes it on the machines this project is developed on.
pub const NO_ADAPTER_HELP: &str = "no usable GPU adapter (Vulkan, Metal or DX12) was found.\n\
  Install a GPU driver with Vulkan support, or, on a machine without a GPU, Mesa's\n\
  software Vulkan driver (lavapipe):\n\
      sudo apt-get install mesa-vulkan-drivers      # Debian / Ubuntu\n\
  then run `arcface info` to check what was picked.";

/// A device, its queue and what was chosen. Everything GPU-side goes through it.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub(crate) pipelines: super::binding::PipelineCache,
    pub(crate) bind_groups: super::binding::BindGroupCache,
    pub(crate) arena: Mutex<Option<super::binding::Arena>>,
    /// Bound where a kernel's optional input is absent (one per binding a
    /// dispatch may leave empty).
    pub(crate) placeholders: Vec<wgpu::Buffer>,
    pub(crate) pool: Pool,
    /// What was asked of the device (benchmarks and tests read it).
    pub counters: Counters,
    /// Workgroups per grid dimension before a dispatch is split over y. The
    /// adapter's limit; tests lower it to exercise the split on small data.
    pub grid_limit: u32,
    /// Fill every tensor asked for without zeros with NaN first (tests: an
    /// output a kernel does not write whole cannot pass its checks).
    pub poison_uninit: bool,
    /// The shape of kernel this device runs (tests switch it to run both).
    pub kernels: KernelSet,
    /// Whether `kernels` was asked for rather than chosen from the adapter.
    pub kernels_overridden: bool,
    /// The subgroup size where the device has subgroup operations and one
    /// fixed size (kernels that exchange values through a subgroup are
    /// written for one size; tests clear it to run their fallbacks).
    pub subgroup_size: Option<u32>,
    /// The most loop iterations one invocation may run on this driver, where
    /// it has such a limit: llvmpipe (lavapipe) ends every loop of a shader
    /// once 65535 back-edges have been taken in it, counted over all its
    /// loops together (gallivm's loop limiter), so a longer reduction would
    /// come out wrong without an error. Dispatches are checked against it.
    pub max_loop_trips: Option<u64>,
}

/// llvmpipe's `LP_MAX_TGSI_LOOP_ITERATIONS`.
pub const LLVMPIPE_MAX_LOOP_TRIPS: u64 = 65_535;

/// Ranking of device types: hardware first, software last.
fn preference(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl Gpu {
    /// Picks an adapter as `GpuOptions::from_env()` says.
    pub fn new() -> Result<Gpu> {
        Gpu::with_options(&GpuOptions::from_env())
    }

    pub fn with_options(opts: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Gpu::with_options_async(opts))
    }

    /// `with_options` as a future: the browser hands out its adapter and
    /// device asynchronously (and has one adapter: WebGPU's).
    pub async fn with_options_async(opts: &GpuOptions) -> Result<Gpu> {
        #[cfg(not(target_arch = "wasm32"))]
        let backends = opts.backends()?;
        #[cfg(target_arch = "wasm32")]
        let backends = wgpu::Backends::BROWSER_WEBGPU;
        let kernels =
            opts.kernels.as_deref().map(|k| KernelSet::parse(k, "--kernels / ARCFACE_KERNELS")).transpose()?;
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        #[cfg(not(target_arch = "wasm32"))]
        let mut adapters = instance.enumerate_adapters(backends).await;
        #[cfg(target_arch = "wasm32")]
        let mut adapters: Vec<wgpu::Adapter> = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .into_iter()
            .collect();
        // Never GL, even if a future wgpu build brings it in.
        adapters.retain(|a| a.get_info().backend != wgpu::Backend::Gl);
        if let Some(want) = &opts.adapter {
            let want = want.to_ascii_lowercase();
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            adapters.retain(|a| a.get_info().name.to_ascii_lowercase().contains(&want));
            if adapters.is_empty() {
                bail!(
                    "--adapter / ARCFACE_ADAPTER: no adapter name contains `{want}`; found: {}",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                );
            }
        }
        adapters.sort_by_key(|a| preference(a.get_info().device_type));
        let adapter = match adapters.into_iter().next() {
            Some(a) => a,
            None => bail!("{NO_ADAPTER_HELP}"),
        };
        let info = adapter.get_info();
        let adapter_set = KernelSet::for_device(info.device_type);
        let limits = adapter.limits();
        // Timestamp queries are optional: benchmarks fall back to CPU timing
        // of whole submissions when they are missing. So are subgroups, and
        // f16 storage (mixed precision).
        let features = adapter.features()
            & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16);
        let subgroup_size = (features.contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == info.subgroup_max_size)
            .then_some(info.subgroup_min_size);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("arcface"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .with_context(|| format!("creating a device on adapter `{}`", info.name))?;
        let placeholders = (0..PLACEHOLDERS)
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("absent input"),
                    size: 16,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let max_loop_trips = info.driver.contains("llvmpipe").then_some(LLVMPIPE_MAX_LOOP_TRIPS);
        Ok(Gpu {
            device,
            queue,
            info,
            limits: limits.clone(),
            features,
            pipelines: Default::default(),
            bind_groups: Default::default(),
            arena: Mutex::new(None),
            placeholders,
            pool: Pool::default(),
            counters: Counters::default(),
            grid_limit: limits.max_compute_workgroups_per_dimension,
            poison_uninit: false,
            kernels: kernels.unwrap_or(adapter_set),
            kernels_overridden: kernels.is_some(),
            subgroup_size,
            max_loop_trips,
        })
    }

    /// The most bytes of free device buffers kept for reuse beyond what the
    /// last two submissions used (2 GiB by default; see `pool`).
    pub fn set_buffer_cache(&self, bytes: u64) {
        self.pool.set_max_free_bytes(bytes);
    }

    /// Every submission goes through here: the buffers the pool handed out
    /// as zeros are cleared first, then `record` encodes the work.
    pub(crate) fn submit(&self, record: impl FnOnce(&mut wgpu::CommandEncoder)) -> wgpu::SubmissionIndex {
        let mut enc = self.device.create_command_encoder(&Default::default());
        for b in self.pool.take_clears() {
            enc.clear_buffer(&b, 0, None);
        }
        record(&mut enc);
        let index = self.queue.submit([enc.finish()]);
        self.counters.add(Event::Submit, 1);
        index
    }

    /// After a submission and once its commands are dropped: the buffers
    /// freed so far may be handed out again.
    pub(crate) fn submitted(&self) {
        if self.pool.submitted() {
            self.bind_groups.clear();
        }
    }

    /// Maps `staging` (the destination of a copy in submission `index`),
    /// waits for it and returns its bytes: a blocking read-back (native).
    pub(crate) fn read_mapped(&self, staging: &wgpu::Buffer, index: wgpu::SubmissionIndex) -> Vec<u8> {
        pollster::block_on(self.read_mapped_async(staging, index))
    }

    /// `read_mapped` as a future. Natively the device is polled until the
    /// submission is done, so the future is ready when first polled; on the
    /// web the browser maps the buffer while the page's event loop runs, and
    /// nothing may block.
    pub(crate) async fn read_mapped_async(&self, staging: &wgpu::Buffer, index: wgpu::SubmissionIndex) -> Vec<u8> {
        self.counters.add(Event::BlockingReadback, 1);
        let mapped = super::readback::Mapped::default();
        let done = mapped.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| done.finish(r.is_ok()));
        #[cfg(not(target_arch = "wasm32"))]
        self.wait(Some(index));
        #[cfg(target_arch = "wasm32")]
        let _ = index;
        assert!(mapped.await, "mapping a read-back buffer failed");
        let out = staging.get_mapped_range(..).expect("mapped range").to_vec();
        staging.unmap();
        out
    }

    /// Blocks until the GPU has finished `index` (or everything submitted).
    pub fn wait(&self, index: Option<wgpu::SubmissionIndex>) {
        let poll = match index {
            Some(i) => wgpu::PollType::Wait { submission_index: Some(i), timeout: None },
            None => wgpu::PollType::wait_indefinitely(),
        };
        self.device.poll(poll).expect("waiting for the GPU");
    }

    /// Whether tensors may be stored in f16 (mixed precision).
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// What `arcface info` prints.
    pub fn report(&self) -> AdapterReport {
        let l = &self.limits;
        AdapterReport {
            name: self.info.name.clone(),
            backend: format!("{:?}", self.info.backend),
            device_type: format!("{:?}", self.info.device_type),
            driver: self.info.driver.clone(),
            driver_info: self.info.driver_info.clone(),
            software: self.info.device_type == wgpu::DeviceType::Cpu,
            kernels: self.kernels,
            kernels_chosen_by: if self.kernels_overridden { "--kernels" } else { "adapter" },
            timestamp_query: self.has_timestamps(),
            shader_f16: self.has_f16(),
            subgroup_size: self.subgroup_size,
            max_buffer_size: l.max_buffer_size,
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub software: bool,
    /// The kernel set in use and what chose it.
    pub kernels: KernelSet,
    pub kernels_chosen_by: &'static str,
    pub timestamp_query: bool,
    /// f16 storage (`--precision f16`).
    pub shader_f16: bool,
    /// Subgroup operations and their one size, if the device has both.
    pub subgroup_size: Option<u32>,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
}
