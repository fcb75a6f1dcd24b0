//! A checkpoint as a standard ONNX model (`arcface export`), opset 13, the
//! batch dimension dynamic, batch norms kept as BatchNormalization nodes
//! with their running statistics (so the file is the checkpoint, not an
//! approximation of it).
//!
//! - MobileFaceNet: input `input` (N, 3, 112, 112), normalised as the
//!   metadata says; output `embedding` (N, 128), before L2 normalisation
//!   (the softmax variant: `logits`). With the head, a second output
//!   `logits` = s * cos(embedding, each person's weight), what `predict`
//!   ranks by (ArcFace without the margin).
//! - MiniNetwork: input (N, 3, S, S); output `logits`.
//!
//! The metadata (`metadata_props`) carries the normalisation, the person
//! names and the producer. An imported network is not exported: its
//! original ONNX file already is one.

use super::checkpoint;
use super::onnx::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto, FLOAT,
};
use super::tensorfile::TensorFile;
use crate::kernels::batchnorm::EPS;
use crate::models::{mininet, Arch, Head, ModelSpec, EMBEDDING};
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

/// Writes the checkpoint at `ckpt` as ONNX to `out`; `head` adds the
/// classifier output to a MobileFaceNet + ArcFace model.
pub fn export(ckpt: &Path, out: &Path, head: bool) -> Result<Exported> {
    let (meta, file) = checkpoint::read_meta(ckpt)?;
    let mut g = Builder { file: &file, ckpt, graph: GraphProto { name: "arcface".into(), ..Default::default() } };
    let spec = meta.model;
    let size = spec.input as i64;
    g.graph.input.push(value_info("input", &[None, Some(3), Some(size), Some(size)]));
    let outputs = match spec.arch {
        Arch::MobileFaceNet => g.mobilefacenet(&spec, head)?,
        Arch::MiniNet => {
            if head {
                bail!("--head: MiniNetwork is a classifier; its one output is already `logits`");
            }
            g.mininet(&spec)?
        }
        Arch::Imported => bail!(
            "{}: an imported network is exported by its original ONNX file (`{}`)",
            ckpt.display(),
            meta.graph.as_ref().map_or("?", |d| d.source.as_str())
        ),
    };
    let n = &meta.normalization;
    let props = [
        ("producer", format!("arcface {}", env!("CARGO_PKG_VERSION"))),
        ("normalization_mean", format!("{:?}", n.mean)),
        ("normalization_std", format!("{:?}", n.std)),
        ("classes", serde_json::to_string(&meta.classes)?),
    ];
    let parameters = g.graph.initializer.iter().map(|t| t.raw_data.len() / 4).sum();
    let nodes = g.graph.node.len();
    let model = ModelProto {
        ir_version: 8,
        producer_name: "arcface".into(),
        graph: Some(g.graph),
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

struct Builder<'a> {
    file: &'a TensorFile,
    ckpt: &'a Path,
    graph: GraphProto,
}

impl Builder<'_> {
    /// The checkpoint's tensor `name` as an initializer, reshaped to `shape`
    /// where given.
    fn weight(&mut self, name: &str, shape: Option<&[usize]>) -> Result<String> {
        let t = self.file.get(name).with_context(|| format!("{}: no tensor `{name}`", self.ckpt.display()))?;
        let dims = shape.map_or_else(|| t.shape.clone(), <[usize]>::to_vec);
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

    fn conv(
        &mut self,
        x: &str,
        w: &str,
        b: Option<&str>,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        y: &str,
    ) -> String {
        let (k, s, p) = (k as i64, stride as i64, pad as i64);
        let attrs = vec![
            ints("kernel_shape", &[k, k]),
            ints("strides", &[s, s]),
            ints("pads", &[p, p, p, p]),
            int("group", groups as i64),
        ];
        let mut inputs = vec![x, w];
        inputs.extend(b);
        self.node("Conv", &inputs, y, attrs)
    }

    fn mobilefacenet(&mut self, spec: &ModelSpec, head: bool) -> Result<Vec<String>> {
        let mut x = "input".to_string();
        for block in spec.blocks() {
            let block_in = x.clone();
            for l in &block.layers {
                let w = self.weight(&format!("{}.conv.weight", l.name), None)?;
                let conv = self.conv(&x, &w, None, l.k, l.stride, l.pad, l.groups, &format!("{}.conv", l.name));
                let bn: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
                    .iter()
                    .map(|p| self.weight(&format!("{}.bn.{p}", l.name), None))
                    .collect::<Result<_>>()?;
                let refs: Vec<&str> = std::iter::once(conv.as_str()).chain(bn.iter().map(String::as_str)).collect();
                x = self.node("BatchNormalization", &refs, &format!("{}.bn", l.name), vec![float("epsilon", EPS)]);
                if l.prelu {
                    let slope = self.weight(&format!("{}.act.weight", l.name), Some(&[l.cout, 1, 1]))?;
                    x = self.node("PRelu", &[&x, &slope], &format!("{}.act", l.name), vec![]);
                }
            }
            if block.residual {
                let name = format!("{}.add", block.layers[0].name.trim_end_matches(".block.0"));
                x = self.node("Add", &[&block_in, &x], &name, vec![]);
            }
        }
        let out = match spec.head {
            Head::ArcFace { .. } => "embedding",
            Head::Softmax => "logits",
        };
        self.node("Flatten", &[&x], out, vec![int("axis", 1)]);
        let width = spec.embedding() as i64;
        self.graph.output.push(value_info(out, &[None, Some(width)]));
        let mut outputs = vec![out.to_string()];
        if let (true, Head::ArcFace { s, .. }) = (head, spec.head) {
            // logits = s * normalise(embedding) . normalise(W_c) for each person c.
            let w = self.file.get("head.weight").with_context(|| format!("{}: no head", self.ckpt.display()))?;
            let classes = spec.classes;
            let mut wt = vec![0f32; EMBEDDING * classes];
            for c in 0..classes {
                let row = &w.values[c * EMBEDDING..(c + 1) * EMBEDDING];
                let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
                for (d, v) in row.iter().enumerate() {
                    wt[d * classes + c] = (*v as f64 / norm * s) as f32;
                }
            }
            let wt = self.constant("head.weight_normalised_scaled", &[EMBEDDING, classes], &wt)?;
            let unit =
                self.node("LpNormalization", &["embedding"], "embedding_normalised", vec![int("axis", 1), int("p", 2)]);
            self.node("MatMul", &[&unit, &wt], "logits", vec![]);
            self.graph.output.push(value_info("logits", &[None, Some(classes as i64)]));
            outputs.push("logits".into());
        }
        Ok(outputs)
    }

    fn mininet(&mut self, spec: &ModelSpec) -> Result<Vec<String>> {
        let mut x = "input".to_string();
        for name in mininet::CONVS {
            let (w, b) = (self.weight(&format!("{name}.weight"), None)?, self.weight(&format!("{name}.bias"), None)?);
            let y = self.conv(&x, &w, Some(&b), 3, 1, 1, 1, &format!("{name}.conv"));
            x = self.node("Relu", &[&y], &format!("{name}.relu"), vec![]);
        }
        let flat = self.node("Flatten", &[&x], "features", vec![int("axis", 1)]);
        let (w, b) = (self.weight("fc.weight", None)?, self.weight("fc.bias", None)?);
        self.node("Gemm", &[&flat, &w, &b], "logits", vec![int("transB", 1)]);
        self.graph.output.push(value_info("logits", &[None, Some(spec.classes as i64)]));
        Ok(vec!["logits".into()])
    }
}
