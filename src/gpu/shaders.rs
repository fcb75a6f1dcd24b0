//! The one list of every WGSL file: `shaders/<module>.wgsl` for each kernel
//! module that owns a shader, and `shaders/<module>_<variant>.wgsl` for a
//! variant that needs an adapter feature (compiled after its module's file,
//! so it shares its bindings and helpers). Each is compiled with
//! `common.wgsl` prepended; tests parse and validate all of them with naga.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Activation,
    Residual,
    Reduce,
    BatchNorm,
    BnAct,
    Conv2d,
    /// conv2d.wgsl's CPU-set 3x3 window kernel with subgroup operations.
    Conv2dSubgroup,
    Linear,
    /// linear.wgsl's CPU-set product with subgroup operations.
    LinearSubgroup,
    MaxPool,
    Resample,
    L2Norm,
    ArcFace,
    SoftmaxXent,
    Sgd,
}

const COMMON: &str = include_str!("../../shaders/common.wgsl");

impl Shader {
    pub const ALL: [Shader; 15] = [
        Shader::Activation,
        Shader::Residual,
        Shader::Reduce,
        Shader::BatchNorm,
        Shader::BnAct,
        Shader::Conv2d,
        Shader::Conv2dSubgroup,
        Shader::Linear,
        Shader::LinearSubgroup,
        Shader::MaxPool,
        Shader::Resample,
        Shader::L2Norm,
        Shader::ArcFace,
        Shader::SoftmaxXent,
        Shader::Sgd,
    ];

    pub fn name(self) -> &'static str {
        self.file().0
    }

    fn file(self) -> (&'static str, &'static str) {
        match self {
            Shader::Activation => ("activation.wgsl", include_str!("../../shaders/activation.wgsl")),
            Shader::Residual => ("residual.wgsl", include_str!("../../shaders/residual.wgsl")),
            Shader::Reduce => ("reduce.wgsl", include_str!("../../shaders/reduce.wgsl")),
            Shader::BatchNorm => ("batchnorm.wgsl", include_str!("../../shaders/batchnorm.wgsl")),
            Shader::BnAct => ("bn_act.wgsl", include_str!("../../shaders/bn_act.wgsl")),
            Shader::Conv2d => ("conv2d.wgsl", include_str!("../../shaders/conv2d.wgsl")),
            Shader::Conv2dSubgroup => ("conv2d_subgroup.wgsl", include_str!("../../shaders/conv2d_subgroup.wgsl")),
            Shader::Linear => ("linear.wgsl", include_str!("../../shaders/linear.wgsl")),
            Shader::LinearSubgroup => ("linear_subgroup.wgsl", include_str!("../../shaders/linear_subgroup.wgsl")),
            Shader::MaxPool => ("maxpool.wgsl", include_str!("../../shaders/maxpool.wgsl")),
            Shader::Resample => ("resample.wgsl", include_str!("../../shaders/resample.wgsl")),
            Shader::L2Norm => ("l2norm.wgsl", include_str!("../../shaders/l2norm.wgsl")),
            Shader::ArcFace => ("arcface.wgsl", include_str!("../../shaders/arcface.wgsl")),
            Shader::SoftmaxXent => ("softmax_xent.wgsl", include_str!("../../shaders/softmax_xent.wgsl")),
            Shader::Sgd => ("sgd.wgsl", include_str!("../../shaders/sgd.wgsl")),
        }
    }

    /// The shader whose file a variant is compiled after.
    fn base(self) -> Option<Shader> {
        match self {
            Shader::LinearSubgroup => Some(Shader::Linear),
            Shader::Conv2dSubgroup => Some(Shader::Conv2d),
            _ => None,
        }
    }

    /// Whether the shader uses subgroup operations (wgpu's `SUBGROUP`).
    pub fn needs_subgroups(self) -> bool {
        matches!(self, Shader::LinearSubgroup | Shader::Conv2dSubgroup)
    }

    /// The source as compiled: `common.wgsl`, the base file of a variant,
    /// then the file.
    pub fn composed(self) -> String {
        let base = self.base().map_or("", |b| b.file().1);
        format!("{COMMON}\n{base}\n{}", self.file().1)
    }
}
