//! What a builder declares about each parameter: name, shape, how it is
//! initialised, and whether SGD learns it.

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// PyTorch's default for conv and linear weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    DefaultUniform {
        fan_in: usize,
    },
    /// Kaiming normal for ReLU: N(0, 2/fan_in).
    KaimingNormal {
        fan_in: usize,
    },
    /// Xavier uniform: U(-sqrt(6/(fan_in+fan_out)), +...).
    XavierUniform {
        fan_in: usize,
        fan_out: usize,
    },
    Const(f32),
}

/// A parameter of a layer table: name, shape, initialisation, learned or buffer.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub trainable: bool,
}
