//! Any model as a standard ONNX model (`arcface export`), opset 13, the
//! batch dimension dynamic: a walk over its graph, one ONNX node per op, the
//! inverse of `onnx_import` (importing the file gives the same graph and
//! weights). Batch norms stay BatchNormalization nodes with their running
//! statistics, so the file is the model, not an approximation of it.
//!
//! Input `input` (N, 3, S, S), normalised as the metadata says; output
//! `embedding` (N, D), before L2 normalisation (a softmax classifier's:
//! `logits`). With `--head`, an ArcFace model's second output `logits` =
//! s * cos(embedding, each person's weight), what `predict` ranks by
//! (ArcFace without the margin). The metadata (`metadata_props`) carries the
//! normalisation, the person names and the producer.

use super::model_file::{self, ModelFile};
use super::onnx::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto, FLOAT,
};
use super::tensorfile::TensorFile;
use crate::data::input::Normalization;
use crate::kernels::activation::Act;
use crate::kernels::batchnorm::EPS;
use crate::models::graph::{self, GraphDef, Op, Shapes};
use crate::models::{Head, ModelSpec, BACKBONE, HEAD_WEIGHT};
use anyhow::{bail, Context, Result};
use prost::Message;
use std::path::Path;

/// What `export` wrote.
#[derive(Debug, serde::Serialize)]
pub struct Exported {
    pub nodes: usize,
    pub parameters: usize,
    pub outputs: Vec<String>,
}

/// A model file's parts that the export reads.
struct Source {
    def: GraphDef,
    file: TensorFile,
    /// Graph weight `n` is the file's tensor `prefix + n`.
    prefix: &'static str,
    normalization: Normalization,
    classes: Vec<String>,
    /// A checkpoint's model (none for an imported network never trained here).
    spec: Option<ModelSpec>,
}

fn source(path: &Path) -> Result<Source> {
    Ok(match model_file::read(path)? {
        ModelFile::Graph { def, file } => {
            let normalization = def.normalization.clone();
            Source { def, file, prefix: "", normalization, classes: Vec::new(), spec: None }
        }
        ModelFile::Checkpoint { meta, file } => {
            let (def, prefix) = match &meta.graph {
                Some(g) => (g.clone(), BACKBONE),
                None => (meta.model.build().context("a network built here has a builder")?.graph, ""),
            };
            Source {
                def,
                file,
                prefix,
                normalization: meta.normalization,
                classes: meta.classes,
                spec: Some(meta.model),
            }
        }
    })
}

/// Writes the model file at `path` (a checkpoint, or an imported network)
/// as ONNX to `out`; `head` adds an ArcFace model's classifier output.
pub fn export(path: &Path, out: &Path, head: bool) -> Result<Exported> {
    let src = source(path)?;
    let arcface = match (head, src.spec.map(|s| s.head)) {
        (false, _) => None,
        (true, Some(Head::ArcFace { s, .. })) => Some(s),
        (true, Some(Head::Softmax)) => {
            bail!("--head: {} is a softmax classifier; its one output is already `logits`", path.display())
        }
        (true, None) => {
            bail!("--head: {} is an imported network without a head (fine-tune it with train --init)", path.display())
        }
    };
    let shape = |n: &str| src.file.get(&format!("{}{n}", src.prefix)).ok().map(|t| t.shape.clone());
    let shapes = graph::infer(&src.def, src.def.input_size, &shape)
        .with_context(|| format!("{}: the graph does not fit its weights", path.display()))?;
    let out_name = match src.spec.map(|s| s.head) {
        Some(Head::Softmax) => "logits",
        _ => "embedding",
    };
    let graph = GraphProto { name: "arcface".into(), ..Default::default() };
    let mut w = Writer { src: &src, path, graph, flat_output: shapes.output.len() == 1 };
    let size = src.def.input_size as i64;
    w.graph.input.push(value_info("input", &[None, Some(3), Some(size), Some(size)]));
    for op in &src.def.ops {
        w.op(op, &shapes, out_name)?;
    }
    let width = shapes.output_width();
    if shapes.output.len() != 1 {
        let last = w.value(&src.def.output, out_name);
        w.node("Flatten", &[&last], out_name, vec![int("axis", 1)]);
    }
    w.graph.output.push(value_info(out_name, &[None, Some(width as i64)]));
    let mut outputs = vec![out_name.to_string()];
    if let Some(s) = arcface {
        w.arcface_logits(s, width, src.spec.map_or(0, |m| m.classes))?;
        outputs.push("logits".into());
    }
    let n = &src.normalization;
    let props = [
        ("producer", format!("arcface {}", env!("CARGO_PKG_VERSION"))),
        ("source", src.def.source.clone()),
        ("normalization_mean", format!("{:?}", n.mean)),
        ("normalization_std", format!("{:?}", n.std)),
        ("classes", serde_json::to_string(&src.classes)?),
    ];
    let parameters = w.graph.initializer.iter().map(|t| t.raw_data.len() / 4).sum();
    let nodes = w.graph.node.len();
    let model = ModelProto {
        ir_version: 8,
        producer_name: "arcface".into(),
        graph: Some(w.graph),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        metadata_props: props.map(|(k, v)| StringStringEntryProto { key: k.into(), value: v }).to_vec(),
    };
    crate::data::atomic_file::write(out, &model.encode_to_vec())?;
    Ok(Exported { nodes, parameters, outputs })
}

/// `name`'s float tensor type, None = a dynamic dimension (the batch).
fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Some(v) => Dimension { dim_value: Some(*v), dim_param: None },
            None => Dimension { dim_value: None, dim_param: Some("batch".into()) },
        })
        .collect();
    let shape = Some(TensorShapeProto { dim });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto { tensor_type: Some(TensorTypeProto { elem_type: FLOAT, shape }) }),
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: v.to_vec(), r#type: 7, ..Default::default() }
}
fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: v, r#type: 2, ..Default::default() }
}
fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f: v, r#type: 1, ..Default::default() }
}

struct Writer<'a> {
    src: &'a Source,
    path: &'a Path,
    graph: GraphProto,
    /// Whether the graph's output is already one row per image.
    flat_output: bool,
}

impl Writer<'_> {
    /// A graph value's name in the file: the input is `input`, the output
    /// `out` when it is already one row per image.
    fn value(&self, v: &str, out: &str) -> String {
        if v == self.src.def.input {
            "input".into()
        } else if v == self.src.def.output && self.flat_output {
            out.into()
        } else {
            v.into()
        }
    }

    /// Graph weight `name` as an initializer (reshaped to `dims` where
    /// given), written once.
    fn weight(&mut self, name: &str, dims: Option<&[usize]>) -> Result<String> {
        if self.graph.initializer.iter().any(|t| t.name == name) {
            return Ok(name.into());
        }
        let key = format!("{}{name}", self.src.prefix);
        let t = self.src.file.get(&key).with_context(|| format!("{}: no tensor `{key}`", self.path.display()))?;
        let dims = dims.map_or_else(|| t.shape.clone(), <[usize]>::to_vec);
        self.constant(name, &dims, &t.values)
    }

    fn constant(&mut self, name: &str, dims: &[usize], values: &[f32]) -> Result<String> {
        if dims.iter().product::<usize>() != values.len() {
            bail!("`{name}`: {} values for shape {dims:?}", values.len());
        }
        self.graph.initializer.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        Ok(name.into())
    }

    fn node(&mut self, op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> String {
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: output.into(),
            op_type: op.into(),
            attribute,
            domain: String::new(),
        });
        output.into()
    }

    /// One graph op as ONNX nodes.
    fn op(&mut self, op: &Op, shapes: &Shapes, out: &str) -> Result<()> {
        let v = |s: &Self, n: &str| s.value(n, out);
        let y = v(self, op.output());
        match op {
            Op::Conv { x, w, b, stride, pad, groups, .. } => {
                let wn = self.weight(w, None)?;
                let k = self.src.file.get(&format!("{}{w}", self.src.prefix))?.shape.clone();
                let mut inputs = vec![v(self, x), wn];
                if let Some(b) = b {
                    inputs.push(self.weight(b, None)?);
                }
                let (s, p) = (*stride as i64, *pad as i64);
                let attrs = vec![
                    ints("kernel_shape", &[k[2] as i64, k[3] as i64]),
                    ints("strides", &[s, s]),
                    ints("pads", &[p, p, p, p]),
                    int("group", *groups as i64),
                ];
                self.node("Conv", &refs(&inputs), &y, attrs);
            }
            Op::BatchNorm { x, scale, bias, mean, var, .. } => {
                let mut inputs = vec![v(self, x)];
                for n in [scale, bias, mean, var] {
                    inputs.push(self.weight(n, None)?);
                }
                self.node("BatchNormalization", &refs(&inputs), &y, vec![float("epsilon", EPS)]);
            }
            Op::Prelu { x, slope, .. } => {
                // ONNX broadcasts from the right: a per-channel slope of an
                // image tensor is (C, 1, 1).
                let c = self.src.file.get(&format!("{}{slope}", self.src.prefix))?.values.len();
                let image = shapes.values.get(x).is_some_and(|s| s.len() == 3);
                let dims = if image { vec![c, 1, 1] } else { vec![c] };
                let sn = self.weight(slope, Some(&dims))?;
                self.node("PRelu", &[&v(self, x), &sn], &y, vec![]);
            }
            Op::Act { x, act: Act::Relu, .. } => {
                self.node("Relu", &[&v(self, x)], &y, vec![]);
            }
            Op::Act { x, act: Act::Relu6, .. } => {
                let lo = self.scalar("relu6.min", 0.0)?;
                let hi = self.scalar("relu6.max", 6.0)?;
                self.node("Clip", &[&v(self, x), &lo, &hi], &y, vec![]);
            }
            Op::Add { a, b, .. } => {
                self.node("Add", &[&v(self, a), &v(self, b)], &y, vec![]);
            }
            Op::Flatten { x, .. } => {
                self.node("Flatten", &[&v(self, x)], &y, vec![int("axis", 1)]);
            }
            Op::Linear { x, w, b, .. } => {
                let mut x = v(self, x);
                if shapes.values.get(op.inputs()[0]).is_some_and(|s| s.len() != 1) {
                    x = self.node("Flatten", &[&x], &format!("{}.flatten", op.output()), vec![int("axis", 1)]);
                }
                let mut inputs = vec![x, self.weight(w, None)?];
                if let Some(b) = b {
                    inputs.push(self.weight(b, None)?);
                }
                self.node("Gemm", &refs(&inputs), &y, vec![int("transB", 1)]);
            }
            Op::GlobalAvgPool { x, .. } => {
                self.node("GlobalAveragePool", &[&v(self, x)], &y, vec![]);
            }
            Op::MaxPool { x, k, stride, pad, ceil, .. } => {
                let (k, s, p) = (*k as i64, *stride as i64, *pad as i64);
                let attrs = vec![
                    ints("kernel_shape", &[k, k]),
                    ints("strides", &[s, s]),
                    ints("pads", &[p, p, p, p]),
                    int("ceil_mode", *ceil as i64),
                ];
                self.node("MaxPool", &[&v(self, x)], &y, attrs);
            }
            Op::BnAct { .. } | Op::Fused { .. } => {
                bail!("a fused op in a model file's graph: graphs are stored unfused")
            }
        }
        Ok(())
    }

    /// A one-value constant, written once.
    fn scalar(&mut self, name: &str, v: f32) -> Result<String> {
        if self.graph.initializer.iter().any(|t| t.name == name) {
            return Ok(name.into());
        }
        self.constant(name, &[], &[v])
    }

    /// logits = s * normalise(embedding) . normalise(W_c) for each person c.
    fn arcface_logits(&mut self, s: f64, width: usize, classes: usize) -> Result<()> {
        let w = self.src.file.get(HEAD_WEIGHT).with_context(|| format!("{}: no head", self.path.display()))?;
        let mut wt = vec![0f32; width * classes];
        for c in 0..classes {
            let row = &w.values[c * width..(c + 1) * width];
            let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
            for (d, v) in row.iter().enumerate() {
                wt[d * classes + c] = (*v as f64 / norm * s) as f32;
            }
        }
        let wt = self.constant("head.weight_normalised_scaled", &[width, classes], &wt)?;
        let unit =
            self.node("LpNormalization", &["embedding"], "embedding_normalised", vec![int("axis", 1), int("p", 2)]);
        self.node("MatMul", &[&unit, &wt], "logits", vec![]);
        self.graph.output.push(value_info("logits", &[None, Some(classes as i64)]));
        Ok(())
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
