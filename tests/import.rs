//! ONNX import: the imported MobileFaceNet against ONNX Runtime's embeddings
//! (tests/fixtures/mobilefacenet_onnx_embeddings.safetensors), on the GPU and
//! on the CPU references; unsupported operators are named.

mod common;
use arcface::io::model_file::{self, Model};
use arcface::io::onnx::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use arcface::io::onnx_import::from_onnx;
use arcface::io::tensorfile::TensorFile;
use arcface::models::graph::GraphNet;
use arcface::nn::{Backend, CpuBackend, GpuBackend};
use prost::Message;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn imported(tag: &str) -> PathBuf {
    let (def, weights) = from_onnx(&fixtures().join("mobilefacenet/mobilefacenet-relu6-112.onnx"), 112).unwrap();
    let path = std::env::temp_dir().join(format!("arcface-import-{}-{tag}.safetensors", std::process::id()));
    model_file::save_graph(&path, &def, &weights).unwrap();
    path
}

/// Per image: cosine >= 0.9999 and max abs error <= 1e-4 * max|ref| (the bounds).
fn check(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let (mut worst_cos, mut worst_err) = (1.0f64, 0.0f64);
    for (i, (g, w)) in got.chunks(128).zip(want.chunks(128)).enumerate() {
        let dot: f64 = g.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum();
        let ng: f64 = g.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let nw: f64 = w.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (ng * nw);
        let max_err = g.iter().zip(w).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max);
        (worst_cos, worst_err) = (worst_cos.min(cos), worst_err.max(max_err));
        assert!(cos >= 0.9999, "{what} image {i}: cosine {cos}");
        assert!(max_err <= 1e-4 * scale, "{what} image {i}: max abs error {max_err:.3e} (max |ref| {scale:.3})");
    }
    eprintln!(
        "{what}: worst cosine {worst_cos:.8}, max abs error {worst_err:.3e} = {:.2e} max|ref|",
        worst_err / scale
    );
}

#[test]
fn imported_mobilefacenet_matches_onnx_runtime() {
    let path = imported("ort");
    let reference = TensorFile::read(&fixtures().join("mobilefacenet_onnx_embeddings.safetensors")).unwrap();
    let (x, want) = (reference.get("input").unwrap(), reference.get("embedding").unwrap());
    assert_eq!(want.shape, vec![10, 128]);
    let gpu = common::gpu();
    let mut g = GpuBackend::new(&gpu).unwrap();
    let net = open_graph(&mut g, &path);
    let xt = g.upload(&x.values, &x.shape).unwrap();
    let y = net.forward(&mut g, &xt).unwrap();
    assert_eq!(g.shape(&y), &[10, 128]);
    check(&g.download(&y), &want.values, "GPU");
    // The same graph on the CPU references (two images: f64 convolutions are slow).
    let mut c = CpuBackend;
    let cnet = open_graph(&mut c, &path);
    let two = 2 * 3 * 112 * 112;
    let xc = c.upload(&x.values[..two], &[2, 3, 112, 112]).unwrap();
    let yc = cnet.forward(&mut c, &xc).unwrap();
    check(&c.download(&yc), &want.values[..256], "CPU reference");
    std::fs::remove_file(path).unwrap();
}

fn tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto { dims: dims.to_vec(), data_type: 1, float_data: v.to_vec(), name: name.into(), ..Default::default() }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: name.into(),
        op_type: op.into(),
        ..Default::default()
    }
}

fn write_model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, tag: &str) -> PathBuf {
    let m = ModelProto {
        ir_version: 8,
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![ValueInfoProto { name: "x".into(), ..Default::default() }],
            output: vec![ValueInfoProto { name: "y".into(), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = std::env::temp_dir().join(format!("arcface-import-{}-{tag}.onnx", std::process::id()));
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    path
}

#[test]
fn unsupported_operators_and_attributes_are_named() {
    let softmax = write_model(vec![node("Softmax", "head/probs", &["x"], "y")], vec![], "softmax");
    let e = format!("{:#}", from_onnx(&softmax, 112).err().unwrap());
    assert!(e.contains("head/probs") && e.contains("Softmax"), "{e}");

    let w = tensor("w", &[1, 1, 3, 3], &[0.0; 9]);
    let mut conv = node("Conv", "stem/conv", &["x", "w"], "y");
    conv.attribute.push(arcface::io::onnx::AttributeProto {
        name: "dilations".into(),
        ints: vec![2, 2],
        ..Default::default()
    });
    let dilated = write_model(vec![conv], vec![w], "dilated");
    let e = format!("{:#}", from_onnx(&dilated, 112).err().unwrap());
    assert!(e.contains("stem/conv") && e.contains("dilation"), "{e}");

    let not_onnx = std::env::temp_dir().join(format!("arcface-import-{}-junk.onnx", std::process::id()));
    std::fs::write(&not_onnx, b"\xff\xff\xff not protobuf").unwrap();
    let e = format!("{:#}", from_onnx(&not_onnx, 112).err().unwrap());
    assert!(e.contains("junk.onnx") && e.contains("not an ONNX model"), "{e}");
}

/// A small graph with every other supported operator (Gemm, BatchNorm,
/// PRelu, GlobalAveragePool, Relu, Flatten) against hand-computed values.
#[test]
fn small_graph_of_each_operator_computes_what_onnx_defines() {
    // x (1,2,2,2) -> BN (scale 2, bias 1, mean 0.5, var 1) -> PRelu(0.1) -> GAP -> Flatten -> Gemm(transB) -> Relu
    let mut gemm = node("Gemm", "fc", &["f", "gw", "gb"], "g");
    gemm.attribute.push(arcface::io::onnx::AttributeProto { name: "transB".into(), i: 1, ..Default::default() });
    let nodes = vec![
        node("BatchNormalization", "bn", &["x", "s", "b", "m", "v"], "n"),
        node("PRelu", "act", &["n", "slope"], "p"),
        node("GlobalAveragePool", "gap", &["p"], "a"),
        node("Flatten", "flat", &["a"], "f"),
        gemm,
        node("Relu", "out", &["g"], "y"),
    ];
    let inits = vec![
        tensor("s", &[2], &[2.0, 2.0]),
        tensor("b", &[2], &[1.0, 1.0]),
        tensor("m", &[2], &[0.5, 0.5]),
        tensor("v", &[2], &[1.0, 1.0]),
        tensor("slope", &[2], &[0.1, 0.1]),
        tensor("gw", &[2, 2], &[1.0, 0.0, -1.0, -1.0]),
        tensor("gb", &[2], &[0.0, 0.5]),
    ];
    let path = write_model(nodes, inits, "ops");
    let (def, weights) = from_onnx(&path, 2).unwrap();
    let saved = std::env::temp_dir().join(format!("arcface-import-{}-ops.safetensors", std::process::id()));
    model_file::save_graph(&saved, &def, &weights).unwrap();
    let gpu = common::gpu();
    let mut g = GpuBackend::new(&gpu).unwrap();
    let net = open_graph(&mut g, &saved);
    let x = [0.0, 1.0, 2.0, -3.0, 0.5, 0.5, 0.5, 0.5];
    let xt = g.upload(&x, &[1, 2, 2, 2]).unwrap();
    let yt = net.forward(&mut g, &xt).unwrap();
    let y = g.download(&yt);
    // BN: 2 (x - 0.5) / sqrt(1 + 1e-5) + 1; PRelu; mean per channel.
    let bn = |v: f64| 2.0 * (v - 0.5) / (1.0f64 + 1e-5).sqrt() + 1.0;
    let pr = |v: f64| if v > 0.0 { v } else { 0.1 * v };
    let c0 = [0.0, 1.0, 2.0, -3.0].iter().map(|&v| pr(bn(v))).sum::<f64>() / 4.0;
    let c1 = pr(bn(0.5));
    let want = [(c0).max(0.0), (-c0 - c1 + 0.5).max(0.0)];
    for (a, b) in y.iter().zip(want) {
        assert!((*a as f64 - b).abs() < 1e-5, "{y:?} vs {want:?}");
    }
}

/// An imported graph opened the way every command opens a model file.
fn open_graph<B: Backend>(b: &mut B, path: &Path) -> GraphNet<B> {
    match model_file::open(path, b).unwrap() {
        Model::Imported(g) => g,
        Model::Trained(..) => panic!("{} is not an imported graph", path.display()),
    }
}

/// `import --mean --std` records how the network's photos were normalised
/// (insightface's arcface_torch: 0.5 and 0.5), and every photo is then
/// normalised that way.
#[test]
fn import_records_the_normalisation_it_is_given() {
    use arcface::io::model_file::ModelFile;
    let dir = std::env::temp_dir().join(format!("arcface-import-norm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("m.safetensors");
    let onnx = fixtures().join("mobilefacenet/mobilefacenet-relu6-112.onnx");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["import", onnx.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let ModelFile::Graph { def, .. } = model_file::read(&out).unwrap() else { panic!("an imported graph") };
    assert_eq!((def.normalization.mean, def.normalization.std), ([0.5; 3], [0.5; 3]));
    let gpu = common::gpu();
    let s = arcface::recognize::session::Session::open(&gpu, &out).unwrap();
    let x = s.to_input(&image::RgbImage::from_pixel(112, 112, image::Rgb([255, 0, 128])));
    assert_eq!((x[0], x[112 * 112], x[2 * 112 * 112]), (1.0, -1.0, (128.0 / 255.0 - 0.5) / 0.5));
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["import", onnx.to_str().unwrap(), "--out", out.to_str().unwrap(), "--std", "0.5,0,0.5"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--std"), "{}", String::from_utf8_lossy(&bad.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What PyTorch's exporter writes besides the layers: an initializer shared
/// by two layers through Identity nodes (equal values, say two zero biases)
/// becomes a weight of each layer's own, so fine-tuning does not tie them;
/// a PReLU slope reshaped by Unsqueeze keeps its parameter's name.
#[test]
fn shared_initializers_and_unsqueezed_slopes_import_as_separate_weights() {
    let nodes = vec![
        node("Identity", "share/a", &["zeros"], "b1"),
        node("Identity", "share/b", &["zeros"], "b2"),
        node("Conv", "c1", &["x", "w1", "b1"], "a"),
        node("Constant", "axes/const", &[], "axes"),
        node("Unsqueeze", "p/unsqueeze", &["p.weight", "axes"], "slope"),
        node("PRelu", "p", &["a", "slope"], "c"),
        node("Conv", "c2", &["c", "w2", "b2"], "y"),
    ];
    let mut nodes = nodes;
    let axes = TensorProto { dims: vec![2], data_type: 7, int64_data: vec![1, 2], ..Default::default() };
    nodes[3].attribute.push(arcface::io::onnx::AttributeProto {
        name: "value".into(),
        t: Some(axes),
        ..Default::default()
    });
    let inits = vec![
        tensor("zeros", &[2], &[0.0, 0.0]),
        tensor("w1", &[2, 2, 1, 1], &[1.0, 0.0, 0.0, 1.0]),
        tensor("w2", &[2, 2, 1, 1], &[0.0, 1.0, 1.0, 0.0]),
        tensor("p.weight", &[2], &[0.1, 0.2]),
    ];
    let path = write_model(nodes, inits, "shared");
    let (def, weights) = from_onnx(&path, 2).unwrap();
    let biases: Vec<_> = def
        .ops
        .iter()
        .filter_map(|op| match op {
            arcface::models::graph::Op::Conv { b, .. } => b.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(biases, ["b1", "b2"], "each convolution has a bias of its own");
    assert_eq!(weights["p.weight"].shape, vec![2, 1, 1]);
    assert!(!weights.contains_key("zeros") && !weights.contains_key("slope"), "{:?}", weights.keys());
    std::fs::remove_file(path).unwrap();
}
