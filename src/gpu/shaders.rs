//! The one list of every WGSL file: `shaders/<module>.wgsl` for each kernel
//! module that owns a shader. Each is compiled with `common.wgsl` prepended;
//! tests parse and validate all of them with naga.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Activation,
    Residual,
    Reduce,
    BatchNorm,
    BnAct,
    Conv2d,
    Linear,
    MaxPool,
    L2Norm,
    ArcFace,
    SoftmaxXent,
    Sgd,
}

const COMMON: &str = include_str!("../../shaders/common.wgsl");

impl Shader {
    pub const ALL: [Shader; 12] = [
        Shader::Activation,
        Shader::Residual,
        Shader::Reduce,
        Shader::BatchNorm,
        Shader::BnAct,
        Shader::Conv2d,
        Shader::Linear,
        Shader::MaxPool,
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
            Shader::Linear => ("linear.wgsl", include_str!("../../shaders/linear.wgsl")),
            Shader::MaxPool => ("maxpool.wgsl", include_str!("../../shaders/maxpool.wgsl")),
            Shader::L2Norm => ("l2norm.wgsl", include_str!("../../shaders/l2norm.wgsl")),
            Shader::ArcFace => ("arcface.wgsl", include_str!("../../shaders/arcface.wgsl")),
            Shader::SoftmaxXent => ("softmax_xent.wgsl", include_str!("../../shaders/softmax_xent.wgsl")),
            Shader::Sgd => ("sgd.wgsl", include_str!("../../shaders/sgd.wgsl")),
        }
    }

    /// The source as compiled: `common.wgsl` followed by the file.
    pub fn composed(self) -> String {
        format!("{COMMON}\n{}", self.file().1)
    }
}
