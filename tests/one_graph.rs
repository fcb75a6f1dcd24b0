//! Every network is one graph run by one executor: model files saved before
//! that change load and give the outputs they gave; each pass gives the
//! outputs of the graph it rewrites; export is the inverse of import; an
//! imported network with batch norms fine-tunes its whole backbone.

mod common;
use arcface::data::input::Normalization;
use arcface::io::checkpoint;
use arcface::io::model_file::{self, Model};
use arcface::io::onnx_export::export;
use arcface::io::onnx_import::from_onnx;
use arcface::io::tensorfile::{Loaded, TensorFile};
use arcface::kernels::activation::Act;
use arcface::kernels::check::Rng;
use arcface::models::graph::{self, passes, GraphDef, Mode, Op};
use arcface::models::{Arch, Head, ModelSpec, Net, BACKBONE};
use arcface::nn::{Backend, CpuBackend, GpuBackend};
use arcface::recognize::session::Session;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn before(name: &str) -> PathBuf {
    root().join("tests/fixtures/before_one_graph").join(name)
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arcface-one-graph-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn assert_near(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{i}]: {g} vs {w} (tolerance {tol} x {scale})");
    }
}

#[test]
fn model_files_saved_before_the_one_graph_load_and_give_the_same_outputs() {
    let outputs = TensorFile::read(&before("outputs.safetensors")).unwrap();
    let out = |n: &str| outputs.get(n).unwrap().clone();
    let mut c = CpuBackend;
    // A MiniNetwork checkpoint (CPU references: the same arithmetic, so
    // the same numbers).
    let (mut mini, _) = checkpoint::load(&before("mininet8.safetensors"), &mut c).unwrap();
    let x = out("input8");
    let xt = c.upload(&x.values, &x.shape).unwrap();
    let logits = mini.logits(&mut c, &xt).unwrap();
    assert_near("MiniNetwork logits", &c.download(&logits), &out("mininet8.logits").values, 1e-6);
    // An imported graph fine-tuned here.
    let (mut tuned, meta) = checkpoint::load(&before("finetuned9.safetensors"), &mut c).unwrap();
    assert!(meta.graph.is_some() && tuned.imported_graph().is_some());
    let x = out("input9");
    let xt = c.upload(&x.values, &x.shape).unwrap();
    let logits = tuned.logits(&mut c, &xt).unwrap();
    assert_near("fine-tuned logits", &c.download(&logits), &out("finetuned9.logits").values, 1e-6);
    let emb = tuned.embed_raw(&mut c, &xt).unwrap();
    assert_near("fine-tuned embedding", &c.download(&emb), &out("finetuned9.embedding").values, 1e-6);
    // An imported graph as `arcface import` wrote it.
    let Model::Imported(g) = model_file::open(&before("imported9.safetensors"), &mut c).unwrap() else {
        panic!("not an imported graph")
    };
    assert_eq!((g.def().ops.len(), g.program.output_width()), (8, 128));
    // The bundled MobileFaceNet on the GPU, as every command runs it.
    let gpu = common::gpu();
    let model = root().join("data/models/mobilefacenet_orl40.safetensors");
    let mut s = Session::open(&gpu, &model).unwrap();
    let x = out("input112");
    let per = 3 * 112 * 112;
    let emb = s.embed_inputs(&[x.values[..per].to_vec(), x.values[per..].to_vec()]).unwrap();
    assert_near("bundled MobileFaceNet embeddings", &emb.concat(), &out("orl40.embedding").values, 1e-5);
}

/// A graph of `ops` from value `in` (9x9 images) to value `out`.
fn graph_9x9(source: &str, ops: Vec<Op>) -> GraphDef {
    GraphDef {
        format: 1,
        source: source.into(),
        input: "in".into(),
        output: "out".into(),
        input_size: 9,
        normalization: Normalization { mean: [0.5; 3], std: [0.5; 3] },
        ops,
        parts: Vec::new(),
    }
}

/// An IResNet-shaped graph with batch norms everywhere insightface puts
/// them: after a convolution (foldable), before one (not), in a residual
/// branch whose add has a batch-normed shortcut, and after the last linear
/// layer (1-D); its embedding is `width` wide.
fn bn_graph(seed: u64, width: usize) -> (GraphDef, Vec<(String, Vec<usize>, Vec<f32>)>) {
    let s = |x: &str| x.to_string();
    let conv = |x: &str, w: &str, stride, pad, y: &str| Op::Conv {
        x: s(x),
        w: s(w),
        b: None,
        stride,
        pad,
        groups: 1,
        y: s(y),
    };
    let bn = |x: &str, n: &str, y: &str| Op::BatchNorm {
        x: s(x),
        scale: format!("{n}.g"),
        bias: format!("{n}.b"),
        mean: format!("{n}.m"),
        var: format!("{n}.v"),
        y: s(y),
    };
    let ops = vec![
        conv("in", "c1", 1, 1, "a"),
        bn("a", "bn1", "b"),
        Op::Prelu { x: s("b"), slope: s("p1"), y: s("c") },
        bn("c", "bn2", "d"),
        conv("d", "c2", 2, 1, "e"),
        bn("e", "bn3", "f"),
        Op::Prelu { x: s("f"), slope: s("p2"), y: s("g") },
        conv("g", "c3", 1, 1, "h"),
        bn("h", "bn4", "i"),
        conv("c", "sc", 2, 0, "j"),
        bn("j", "bn5", "k"),
        Op::Add { a: s("i"), b: s("k"), y: s("l") },
        bn("l", "bn6", "m"),
        Op::Flatten { x: s("m"), y: s("n") },
        Op::Linear { x: s("n"), w: s("fc"), b: Some(s("fc.bias")), y: s("o") },
        bn("o", "bn7", "out"),
    ];
    let def = graph_9x9("iresnet-shaped", ops);
    let mut rng = Rng::new(seed);
    let mut w = vec![
        (s("c1"), vec![8, 3, 3, 3], rng.uniform(216, -0.4, 0.4)),
        (s("c2"), vec![8, 8, 3, 3], rng.uniform(576, -0.2, 0.2)),
        (s("c3"), vec![8, 8, 3, 3], rng.uniform(576, -0.2, 0.2)),
        (s("sc"), vec![8, 8, 1, 1], rng.uniform(64, -0.5, 0.5)),
        (s("p1"), vec![8], rng.uniform(8, 0.0, 0.3)),
        (s("p2"), vec![8], rng.uniform(8, 0.0, 0.3)),
        (s("fc"), vec![width, 200], rng.uniform(width * 200, -0.1, 0.1)),
        (s("fc.bias"), vec![width], rng.uniform(width, -0.1, 0.1)),
    ];
    for (n, c) in [("bn1", 8), ("bn2", 8), ("bn3", 8), ("bn4", 8), ("bn5", 8), ("bn6", 8), ("bn7", width)] {
        w.push((format!("{n}.g"), vec![c], rng.uniform(c, 0.5, 1.5)));
        w.push((format!("{n}.b"), vec![c], rng.uniform(c, -0.2, 0.2)));
        w.push((format!("{n}.m"), vec![c], rng.uniform(c, -0.2, 0.2)));
        w.push((format!("{n}.v"), vec![c], rng.uniform(c, 0.5, 1.5)));
    }
    (def, w)
}

fn uploaded<B: Backend>(b: &mut B, w: &[(String, Vec<usize>, Vec<f32>)]) -> HashMap<String, B::T> {
    w.iter().map(|(n, s, v)| (n.clone(), b.upload(v, s).unwrap())).collect()
}

#[test]
fn fusing_and_folding_give_the_outputs_and_gradients_of_the_graph_they_rewrite() {
    let (def, w) = bn_graph(1, 16);
    let fused = passes::fuse(&def);
    let kinds = |d: &GraphDef, k: &str| d.ops.iter().filter(|op| op.kind().starts_with(k)).count();
    // Seven batch norms: each becomes one fused op; the residual add rides
    // on the branch's last one, the PReLUs on theirs.
    assert_eq!((kinds(&fused, "BatchNormalization+"), kinds(&fused, "Add"), kinds(&fused, "PRelu")), (7, 0, 0));
    let host: HashMap<String, (Vec<usize>, Vec<f32>)> =
        w.iter().map(|(n, s, v)| (n.clone(), (s.clone(), v.clone()))).collect();
    let (folded, new) = passes::fold(&def, &|n| host.get(n).cloned()).unwrap();
    // Folded: after c1, c2, c3, sc and the linear layer; bn2 and bn6 follow
    // no convolution and stay.
    assert_eq!(kinds(&folded, "BatchNormalization"), 2);
    assert_eq!(new.len(), 10);

    let mut c = CpuBackend;
    let mut weights = uploaded(&mut c, &w);
    let x = Rng::new(2).uniform(3 * 3 * 81, -1.0, 1.0);
    let xt = c.upload(&x, &[3, 3, 9, 9]).unwrap();
    let run = |c: &mut CpuBackend, d: &GraphDef, weights: &HashMap<String, _>, mode| {
        let lookup = |n: &str| Ok(weights.get(n).cloned().unwrap_or_else(|| panic!("no {n}")));
        graph::run(d, c, &lookup, &xt, mode).unwrap()
    };
    let y = run(&mut c, &def, &weights, Mode::Eval).0;
    let plain = c.download(&y);
    let y = run(&mut c, &fused, &weights, Mode::Eval).0;
    assert_near("fused, eval", &c.download(&y), &plain, 1e-6);
    let mut with_folded = weights.clone();
    with_folded.extend(uploaded(&mut c, &new));
    let y = run(&mut c, &folded, &with_folded, Mode::Eval).0;
    assert_near("folded, eval", &c.download(&y), &plain, 1e-5);

    // Training mode: the same outputs, gradients and running statistics.
    let step = |c: &mut CpuBackend, d: &GraphDef| {
        let weights = uploaded(c, &w);
        let lookup = |n: &str| Ok(weights.get(n).cloned().unwrap());
        let (y, saved) = graph::run(d, c, &lookup, &xt, Mode::Train).unwrap();
        let dy = c.upload(&Rng::new(3).uniform(3 * 16, -1.0, 1.0), &[3, 16]).unwrap();
        let mut grads = BTreeMap::new();
        let mut grad = |c: &mut CpuBackend, n: &str, g| {
            grads.insert(n.to_string(), c.download(&g));
            Ok(())
        };
        graph::backward(d, c, &lookup, &saved.unwrap(), &dy, &mut grad).unwrap();
        let stats: Vec<f32> = ["bn4.m", "bn4.v", "bn7.m"].iter().flat_map(|n| c.download(&weights[*n])).collect();
        (c.download(&y), grads, stats)
    };
    let (y0, g0, s0) = step(&mut c, &def);
    let (y1, g1, s1) = step(&mut c, &fused);
    assert_near("train outputs", &y1, &y0, 1e-6);
    assert_near("running statistics", &s1, &s0, 1e-6);
    assert_eq!(g0.keys().collect::<Vec<_>>(), g1.keys().collect::<Vec<_>>());
    assert_eq!(g0.len(), 8 - 0 + 7 * 2, "every learned weight has a gradient");
    for (n, g) in &g0 {
        assert_near(&format!("gradient of {n}"), &g1[n], g, 1e-5);
    }
    weights.clear();
}

/// A graph with every epilogue the inference form gives a layer: ReLU6
/// after a convolution, a residual add after a 1x1 one, PReLU after a
/// depthwise one and after a linear layer.
fn epilogue_graph() -> (GraphDef, Vec<(String, Vec<usize>, Vec<f32>)>) {
    let s = |x: &str| x.to_string();
    let conv = |x: &str, w: &str, b: &str, (stride, pad, groups), y: &str| Op::Conv {
        x: s(x),
        w: s(w),
        b: Some(s(b)),
        stride,
        pad,
        groups,
        y: s(y),
    };
    let ops = vec![
        conv("in", "c1", "c1.b", (1, 1, 1), "a"),
        Op::Act { x: s("a"), act: Act::Relu6, y: s("b") },
        conv("b", "c2", "c2.b", (1, 0, 1), "c"),
        Op::Add { a: s("c"), b: s("b"), y: s("d") },
        conv("d", "dw", "dw.b", (2, 1, 8), "e"),
        Op::Prelu { x: s("e"), slope: s("p1"), y: s("f") },
        Op::Flatten { x: s("f"), y: s("g") },
        Op::Linear { x: s("g"), w: s("fc"), b: Some(s("fc.b")), y: s("h") },
        Op::Prelu { x: s("h"), slope: s("p2"), y: s("out") },
    ];
    let def = graph_9x9("epilogues", ops);
    let mut rng = Rng::new(5);
    let w = vec![
        (s("c1"), vec![8, 3, 3, 3], rng.uniform(216, -0.8, 0.8)),
        (s("c1.b"), vec![8], rng.uniform(8, -0.5, 2.0)),
        (s("c2"), vec![8, 8, 1, 1], rng.uniform(64, -0.5, 0.5)),
        (s("c2.b"), vec![8], rng.uniform(8, -0.2, 0.2)),
        (s("dw"), vec![8, 1, 3, 3], rng.uniform(72, -0.5, 0.5)),
        (s("dw.b"), vec![8], rng.uniform(8, -0.2, 0.2)),
        (s("p1"), vec![8], rng.uniform(8, 0.0, 0.3)),
        (s("fc"), vec![12, 200], rng.uniform(12 * 200, -0.1, 0.1)),
        (s("fc.b"), vec![12], rng.uniform(12, -0.1, 0.1)),
        (s("p2"), vec![12], rng.uniform(12, 0.0, 0.3)),
    ];
    (def, w)
}

#[test]
fn layers_that_finish_their_outputs_give_the_outputs_of_the_graph_they_rewrite() {
    let (def, w) = epilogue_graph();
    let fused = passes::epilogues(&def);
    let kinds = |d: &GraphDef, k: &str| d.ops.iter().filter(|op| op.kind() == k).count();
    // Every activation and the add ride on the layer before them.
    assert_eq!(fused.ops.len(), 5, "{:?}", fused.ops);
    assert_eq!((kinds(&fused, "Conv+activation+Add"), kinds(&fused, "Gemm+activation+Add")), (3, 1));
    let x = Rng::new(6).uniform(2 * 3 * 81, -1.0, 1.0);
    fn out<B: Backend>(b: &mut B, d: &GraphDef, w: &[(String, Vec<usize>, Vec<f32>)], x: &[f32]) -> Vec<f32> {
        let weights = uploaded(b, w);
        let lookup = |n: &str| Ok(weights.get(n).cloned().unwrap_or_else(|| panic!("no {n}")));
        let xt = b.upload(x, &[2, 3, 9, 9]).unwrap();
        let y = graph::run(d, b, &lookup, &xt, Mode::Eval).unwrap().0;
        b.download(&y)
    }
    let plain = out(&mut CpuBackend, &def, &w, &x);
    assert_near("epilogues, reference ops", &out(&mut CpuBackend, &fused, &w, &x), &plain, 1e-6);
    let gpu = common::gpu();
    assert_near("epilogues, GPU kernels", &out(&mut GpuBackend::new(&gpu).unwrap(), &fused, &w, &x), &plain, 1e-5);
    // No backward: the training form never holds them.
    let mut c = CpuBackend;
    let weights = uploaded(&mut c, &w);
    let lookup = |n: &str| Ok(weights[n].clone());
    let xt = c.upload(&x, &[2, 3, 9, 9]).unwrap();
    let saved = graph::run(&def, &mut c, &lookup, &xt, Mode::Train).unwrap().1.unwrap();
    let dy = c.upload(&[0.0; 24], &[2, 12]).unwrap();
    let err = graph::backward(&fused, &mut c, &lookup, &saved, &dy, &mut |_, _, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("no backward"), "{err}");
}

/// import(export(model)): the same ops, weights and outputs.
fn assert_round_trip(model: &Path, dir: &Path, tag: &str) {
    let onnx = dir.join(format!("{tag}.onnx"));
    export(model, &onnx, false).unwrap();
    let size = match model_file::read(model).unwrap() {
        model_file::ModelFile::Graph { def, .. } => def.input_size,
        model_file::ModelFile::Checkpoint { meta, .. } => meta.model.input,
    };
    let (back, back_w) = from_onnx(&onnx, size).unwrap();
    let mut c = CpuBackend;
    let (orig, orig_w, prefix) = match model_file::read(model).unwrap() {
        model_file::ModelFile::Graph { def, file } => (def, file, ""),
        model_file::ModelFile::Checkpoint { meta, file } => match meta.graph {
            Some(g) => (g, file, BACKBONE),
            None => (meta.model.build().unwrap().graph, file, ""),
        },
    };
    let kinds = |d: &GraphDef| d.ops.iter().map(|op| op.kind()).collect::<Vec<_>>();
    assert_eq!(kinds(&back), kinds(&orig), "{tag}: ops");
    for (a, b) in orig.ops.iter().zip(&back.ops) {
        assert_eq!(a.weights(), b.weights(), "{tag}: the weights of `{}`", a.output());
        for n in a.weights() {
            let (x, y) = (orig_w.get(&format!("{prefix}{n}")).unwrap(), &back_w[n]);
            assert_eq!(x.values, y.values, "{tag}: values of `{n}`");
        }
    }
    // Outputs: the graph as read and as imported back, on one input.
    let x = Rng::new(5).uniform(3 * size * size, -1.0, 1.0);
    let xt = c.upload(&x, &[1, 3, size, size]).unwrap();
    let w1: HashMap<String, _> = orig_w
        .tensors
        .iter()
        .filter_map(|(n, t)| n.strip_prefix(prefix).map(|k| (k.to_string(), c.upload(&t.values, &t.shape).unwrap())))
        .collect();
    let w2: HashMap<String, _> =
        back_w.iter().map(|(n, t)| (n.clone(), c.upload(&t.values, &t.shape).unwrap())).collect();
    let y1 = graph::run(&orig, &mut c, &|n| Ok(w1[n].clone()), &xt, Mode::Eval).unwrap().0;
    let y2 = graph::run(&back, &mut c, &|n| Ok(w2[n].clone()), &xt, Mode::Eval).unwrap().0;
    assert_eq!(c.download(&y1), c.download(&y2), "{tag}: outputs");
}

#[test]
fn export_is_the_inverse_of_import_for_every_kind_of_model() {
    let d = tmp("round-trip");
    let (def, w) = bn_graph(4, 32);
    let weights: BTreeMap<String, Loaded> =
        w.iter().map(|(n, s, v)| (n.clone(), Loaded { shape: s.clone(), values: v.clone() })).collect();
    let bn = d.join("bn.safetensors");
    model_file::save_graph(&bn, &def, &weights).unwrap();
    assert_round_trip(&bn, &d, "imported with batch norms");
    assert_round_trip(&before("imported9.safetensors"), &d, "imported");
    assert_round_trip(&before("finetuned9.safetensors"), &d, "imported and fine-tuned");
    assert_round_trip(&before("mininet8.safetensors"), &d, "MiniNetwork");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `train --init` of an imported network with batch norms and a 32-d
/// embedding, nothing frozen: the head is as wide as the embedding, and the
/// backbone's weights and running statistics all move.
#[test]
fn an_imported_network_with_batch_norms_fine_tunes_its_whole_backbone() {
    use arcface::pipeline::train;
    use arcface::progress::Progress;
    let d = tmp("finetune");
    let (def, w) = bn_graph(7, 32);
    let weights: BTreeMap<String, Loaded> =
        w.iter().map(|(n, s, v)| (n.clone(), Loaded { shape: s.clone(), values: v.clone() })).collect();
    let init = d.join("imported.safetensors");
    model_file::save_graph(&init, &def, &weights).unwrap();
    let cfg = common::fine_tune_config(&init, 1, 0);
    let gpu = common::gpu();
    let run = d.join("run");
    train::run(&gpu, &root().join("data/orl"), &run, cfg, false, &Progress::hidden()).unwrap();
    let after = TensorFile::read(&run.join(train::LAST)).unwrap();
    assert_eq!(after.get("head.weight").unwrap().shape, vec![3, 32], "the head takes the graph's width");
    for (name, _, v) in &w {
        let now = &after.get(&format!("{BACKBONE}{name}")).unwrap().values;
        assert_ne!(now, v, "{name} did not move");
    }
    // It is an ordinary checkpoint: it loads, and exports.
    let (meta, _) = checkpoint::read_meta(&run.join(train::LAST)).unwrap();
    assert_eq!(meta.normalization, def.normalization);
    let mut c = CpuBackend;
    let (net, _) = checkpoint::load(&run.join(train::LAST), &mut c).unwrap();
    assert_eq!(net.embedding_width(), 32);
    assert_round_trip(&run.join(train::LAST), &d, "fine-tuned with batch norms");
    std::fs::remove_dir_all(&d).unwrap();
}

/// One training step of the graph with batch norms on the GPU kernels
/// equals the step composed from the CPU references.
#[test]
fn gpu_step_of_a_graph_with_batch_norms_equals_the_reference() {
    use arcface::kernels::sgd::Sgd;
    fn step<B: Backend>(b: &mut B) -> Vec<(String, Vec<f32>)> {
        let (def, w) = bn_graph(9, 16);
        let spec = ModelSpec { arch: Arch::Imported, input: 9, classes: 3, head: Head::ArcFace { s: 8.0, m: 0.3 } };
        let mut net = Net::pretrained(b, spec, def, w, 3).unwrap();
        let x = Rng::new(4).uniform(4 * 3 * 81, -2.0, 2.0);
        let xt = b.upload(&x, &[4, 3, 9, 9]).unwrap();
        let lt = b.labels(&[0, 1, 2, 1]).unwrap();
        net.train_step(b, &xt, &lt, &Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 }).unwrap();
        let names: Vec<String> = net.params.params.iter().map(|p| p.name.clone()).collect();
        names.into_iter().map(|n| (n.clone(), b.download(net.params.get(&n)))).collect()
    }
    let gpu = common::gpu();
    let (g, c) = (step(&mut GpuBackend::new(&gpu).unwrap()), step(&mut CpuBackend));
    for ((n, a), (_, b)) in g.iter().zip(&c) {
        assert_near(&format!("{n} after the step"), a, b, 1e-4);
    }
    let (_, w0) = bn_graph(9, 16);
    let moved = |n: &str| {
        let before = &w0.iter().find(|(k, _, _)| k == n).unwrap().2;
        &g.iter().find(|(k, _)| *k == format!("{BACKBONE}{n}")).unwrap().1 != before
    };
    assert!(moved("c1") && moved("bn1.g") && moved("bn1.m") && moved("bn7.v"), "weights and statistics move");
}
