//! What the network builders write graphs with: each call adds one op and
//! the parameters it declares (name, shape, initialisation), so a builder
//! reads as the paper's layer table.

use super::graph::{GraphDef, Op};
use crate::data::input::Normalization;
use crate::kernels::activation::Act;
use crate::nn::{Init, ParamSpec};

/// A graph being built and its parameters.
pub struct Builder {
    pub ops: Vec<Op>,
    pub params: Vec<ParamSpec>,
}

/// A built network: its graph and its parameters' specs.
pub struct Built {
    pub graph: GraphDef,
    pub params: Vec<ParamSpec>,
}

/// A convolution's form: kernel size, stride, padding, groups, bias.
#[derive(Clone, Copy)]
pub struct ConvForm {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub bias: bool,
}

impl Builder {
    pub fn new() -> Builder {
        Builder { ops: Vec::new(), params: Vec::new() }
    }

    fn param(&mut self, name: String, shape: Vec<usize>, init: Init, trainable: bool) -> String {
        self.params.push(ParamSpec { name: name.clone(), shape, init, trainable });
        name
    }

    fn push(&mut self, op: Op) -> String {
        let y = op.output().to_string();
        self.ops.push(op);
        y
    }

    /// Weight `<name>.weight` [cout, cin/groups, k, k] (and `<name>.bias`);
    /// writes the value `y`.
    pub fn conv(&mut self, x: &str, name: &str, cin: usize, cout: usize, f: ConvForm, init: Init, y: &str) -> String {
        let w = self.param(format!("{name}.weight"), vec![cout, cin / f.groups, f.k, f.k], init, true);
        let b = f.bias.then(|| self.param(format!("{name}.bias"), vec![cout], Init::Const(0.0), true));
        let (stride, pad, groups) = (f.stride, f.pad, f.groups);
        self.push(Op::Conv { x: x.into(), w, b, stride, pad, groups, y: y.into() })
    }

    /// `<name>.weight`, `.bias`, `.running_mean`, `.running_var` (PyTorch's names).
    pub fn batchnorm(&mut self, x: &str, name: &str, c: usize, y: &str) -> String {
        let scale = self.param(format!("{name}.weight"), vec![c], Init::Const(1.0), true);
        let bias = self.param(format!("{name}.bias"), vec![c], Init::Const(0.0), true);
        let mean = self.param(format!("{name}.running_mean"), vec![c], Init::Const(0.0), false);
        let var = self.param(format!("{name}.running_var"), vec![c], Init::Const(1.0), false);
        self.push(Op::BatchNorm { x: x.into(), scale, bias, mean, var, y: y.into() })
    }

    /// Slope `<name>.weight` [c], 0.25 to start (PyTorch's default).
    pub fn prelu(&mut self, x: &str, name: &str, c: usize, y: &str) -> String {
        let slope = self.param(format!("{name}.weight"), vec![c], Init::Const(0.25), true);
        self.push(Op::Prelu { x: x.into(), slope, y: y.into() })
    }

    pub fn act(&mut self, x: &str, act: Act, y: &str) -> String {
        self.push(Op::Act { x: x.into(), act, y: y.into() })
    }

    pub fn add(&mut self, a: &str, b: &str, y: &str) -> String {
        self.push(Op::Add { a: a.into(), b: b.into(), y: y.into() })
    }

    pub fn flatten(&mut self, x: &str, y: &str) -> String {
        self.push(Op::Flatten { x: x.into(), y: y.into() })
    }

    pub fn maxpool(&mut self, x: &str, k: usize, stride: usize, y: &str) -> String {
        self.push(Op::MaxPool { x: x.into(), k, stride, pad: 0, ceil: true, y: y.into() })
    }

    /// `<name>.weight` [out, inp] and `<name>.bias` [out].
    pub fn linear(&mut self, x: &str, name: &str, inp: usize, out: usize, init: Init, y: &str) -> String {
        let w = self.param(format!("{name}.weight"), vec![out, inp], init, true);
        let b = Some(self.param(format!("{name}.bias"), vec![out], Init::Const(0.0), true));
        self.push(Op::Linear { x: x.into(), w, b, y: y.into() })
    }

    /// The finished network; `output` is its last value.
    pub fn finish(self, source: &str, input: &str, output: &str, input_size: usize) -> Built {
        let graph = GraphDef {
            format: 1,
            source: source.into(),
            input: input.into(),
            output: output.into(),
            input_size,
            normalization: Normalization::default(),
            ops: self.ops,
            parts: Vec::new(),
        };
        Built { graph, params: self.params }
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}
