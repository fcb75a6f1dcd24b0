//! Flag groups shared by several commands (`#[command(flatten)]`), each
//! turned into the engine's options in one place.

use crate::gpu::{Gpu, GpuOptions};
use crate::models::{Arch, Head, ModelSpec};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Which GPU: flags first, then the environment (clap's `env`).
#[derive(Args, Clone, Debug)]
pub struct GpuArgs {
    /// GPU backend (default: all of them)
    #[arg(long, global = true, env = "ARCFACE_BACKEND", value_parser = ["vulkan", "metal", "dx12"])]
    pub backend: Option<String>,
    /// Use the adapter whose name contains this text
    #[arg(long, global = true, env = "ARCFACE_ADAPTER")]
    pub adapter: Option<String>,
    /// Kernel set: gpu (split reductions, tiled products) or cpu (for
    /// lavapipe); default: the one for the adapter
    #[arg(long, global = true, env = "ARCFACE_KERNELS", value_parser = ["gpu", "cpu"])]
    pub kernels: Option<String>,
}

impl GpuArgs {
    /// The flags (clap has already read the environment variables for the
    /// ones not given).
    pub fn options(&self) -> GpuOptions {
        GpuOptions { backend: self.backend.clone(), adapter: self.adapter.clone(), kernels: self.kernels.clone() }
    }

    /// The chosen adapter, announced once on stderr: on a software adapter
    /// (lavapipe, WARP) with a warning, so that a user with a GPU but no
    /// Vulkan/Metal/DX12 driver for it learns why everything is slow.
    pub fn open(&self) -> anyhow::Result<Gpu> {
        let gpu = Gpu::with_options(&self.options())?;
        let r = gpu.report();
        eprintln!("adapter: {} ({}, {} kernels)", r.name, r.backend, r.kernels.name());
        if r.software {
            eprintln!(
                "warning: a software adapter (the CPU): expect training tens of times slower than on a GPU \
                 (BENCHMARKS.md). Have a GPU? Install its Vulkan driver and check `arcface info`."
            );
        }
        Ok(gpu)
    }

    /// The chosen adapter, without the announcement (for `info`, which
    /// prints it in full).
    pub fn open_quietly(&self) -> anyhow::Result<Gpu> {
        Gpu::with_options(&self.options())
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModelArg {
    Mobilefacenet,
    Mininet,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PrecisionArg {
    F32,
    F16,
}

impl From<PrecisionArg> for crate::pipeline::train::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Self::F32,
            PrecisionArg::F16 => Self::F16,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum HeadArg {
    Arcface,
    Softmax,
}

/// A network's shape, but for the architecture and the number of classes
/// (which each command takes its own way).
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// MobileFaceNet's head
    #[arg(long, value_enum, default_value_t = HeadArg::Arcface)]
    pub head: HeadArg,
    /// ArcFace scale s of the cosine logits
    #[arg(long = "scale", visible_alias = "s", default_value_t = 32.0)]
    pub s: f64,
    /// ArcFace additive angular margin m, in radians
    #[arg(long = "margin", visible_alias = "m", default_value_t = 0.5)]
    pub m: f64,
    /// Input size (MiniNetwork; MobileFaceNet takes 112)
    #[arg(long, default_value_t = 112)]
    pub input: usize,
}

impl ModelArgs {
    pub fn spec(&self, model: ModelArg, classes: usize) -> ModelSpec {
        match model {
            ModelArg::Mobilefacenet => ModelSpec {
                arch: Arch::MobileFaceNet,
                input: 112,
                classes,
                head: match self.head {
                    HeadArg::Arcface => Head::ArcFace { s: self.s, m: self.m },
                    HeadArg::Softmax => Head::Softmax,
                },
            },
            ModelArg::Mininet => ModelSpec { arch: Arch::MiniNet, input: self.input, classes, head: Head::Softmax },
        }
    }
}

/// MTCNN settings, shared by detect, prepare and --align.
#[derive(Args, Clone, Debug)]
pub struct DetectArgs {
    /// Smallest face to find, in pixels
    #[arg(long, default_value_t = 20.0)]
    pub min_face: f64,
    /// Scale factor between pyramid levels
    #[arg(long, default_value_t = 0.709)]
    pub factor: f64,
    /// Face-probability thresholds of P-Net, R-Net and O-Net, as P,R,O
    #[arg(long, value_parser = three_thresholds, default_value = "0.6,0.7,0.7")]
    pub thresholds: Thresholds,
    /// MTCNN weights (default: the ones built into arcface)
    #[arg(long, env = "ARCFACE_MTCNN")]
    pub mtcnn: Option<PathBuf>,
}

/// `--thresholds P,R,O`.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds(pub [f32; 3]);

fn three_thresholds(s: &str) -> Result<Thresholds, String> {
    three_numbers(s, "P-Net,R-Net,O-Net", "0.6,0.7,0.7").map(Thresholds)
}

/// Three comma-separated numbers (`what` names them, `e.g.` shows some).
pub fn three_numbers(s: &str, what: &str, e_g: &str) -> Result<[f32; 3], String> {
    let expected = || format!("`{s}`: expected three numbers {what}, e.g. {e_g}");
    let v: Vec<f32> =
        s.split(',').map(|t| t.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|_| expected())?;
    <[f32; 3]>::try_from(v.as_slice()).map_err(|_| expected())
}

impl DetectArgs {
    pub fn options(&self) -> crate::detect::Options {
        crate::detect::Options { min_face: self.min_face, factor: self.factor, thresholds: self.thresholds.0 }
    }

    pub fn detector<'g>(&self, gpu: &'g Gpu) -> anyhow::Result<crate::detect::Detector<'g>> {
        crate::detect::Detector::open(gpu, self.mtcnn.as_deref(), self.options())
    }
}

/// Detection and alignment of whole photos before a model sees them.
#[derive(Args, Clone, Debug)]
pub struct AlignArgs {
    /// Show the model the largest face, detected (MTCNN) and aligned to the
    /// 112x112 template, whatever it was trained on (default: as it was
    /// trained; imported networks and --align runs are shown aligned faces)
    #[arg(long, conflicts_with = "no_align")]
    pub align: bool,
    /// Show the model the whole photo, resized, whatever it was trained on
    /// (for photos that are already face crops)
    #[arg(long)]
    pub no_align: bool,
    #[command(flatten)]
    pub det: DetectArgs,
}

impl AlignArgs {
    /// The framing asked for, if any.
    pub fn framing(&self) -> Option<crate::data::input::Framing> {
        use crate::data::input::Framing;
        match (self.align, self.no_align) {
            (true, _) => Some(Framing::AlignedFace),
            (_, true) => Some(Framing::WholePhoto),
            _ => None,
        }
    }
}

/// How photos become embeddings.
#[derive(Args, Clone, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub align: AlignArgs,
    /// Do not add the mirrored image's embedding
    #[arg(long)]
    pub no_flip: bool,
}

/// `--kernel`'s values: the kernel families' names, so that clap lists them
/// in the help and in the error for an unknown one.
pub fn kernel_family() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::kernels::FAMILIES.iter().map(|f| f.name))
}
