//! Fine-tuning an imported network: the graph's hand-written backward pass
//! against finite differences (CPU references, f64) and against the GPU, the
//! frozen-backbone epochs, and `train --init` end to end.

mod common;
use arcface::data::input::Normalization;
use arcface::io::model_file;
use arcface::io::tensorfile::Loaded;
use arcface::kernels::activation::Act;
use arcface::kernels::check::Rng;
use arcface::kernels::sgd::Sgd;
use arcface::models::graph::{GraphDef, Op};
use arcface::models::{Arch, Head, ModelSpec, Net, BACKBONE};
use arcface::nn::{Backend, CpuBackend, GpuBackend};
use arcface::progress::Progress;
use std::collections::BTreeMap;

const SIZE: usize = 9;

/// conv 3x3 s2 p1 (+bias) -> relu6 -> depthwise 3x3 p1 -> add (residual)
/// -> relu -> global average pool -> flatten -> linear -> 128-d embedding
/// (the ArcFace head takes 128).
fn small_graph(seed: u64) -> (GraphDef, Vec<(String, Vec<usize>, Vec<f32>)>) {
    let s = |x: &str| x.to_string();
    let ops = vec![
        Op::Conv { x: s("in"), w: s("c1.w"), b: Some(s("c1.b")), stride: 2, pad: 1, groups: 1, y: s("a") },
        Op::Act { x: s("a"), act: Act::Relu6, y: s("b") },
        Op::Conv { x: s("b"), w: s("dw.w"), b: None, stride: 1, pad: 1, groups: 4, y: s("c") },
        Op::Add { a: s("b"), b: s("c"), y: s("d") },
        Op::Act { x: s("d"), act: Act::Relu, y: s("e") },
        Op::GlobalAvgPool { x: s("e"), y: s("f") },
        Op::Flatten { x: s("f"), y: s("g") },
        Op::Linear { x: s("g"), w: s("fc.w"), b: Some(s("fc.b")), y: s("out") },
    ];
    let def = GraphDef {
        format: 1,
        source: "test".into(),
        input: s("in"),
        output: s("out"),
        input_size: SIZE,
        normalization: Normalization::default(),
        ops,
        parts: Vec::new(),
    };
    let mut rng = Rng::new(seed);
    let w = vec![
        (s("c1.w"), vec![4, 3, 3, 3], rng.uniform(108, -0.5, 0.5)),
        (s("c1.b"), vec![4], rng.uniform(4, 0.0, 0.5)),
        (s("dw.w"), vec![4, 1, 3, 3], rng.uniform(36, -0.5, 0.5)),
        (s("fc.w"), vec![128, 4], rng.uniform(512, -1.0, 1.0)),
        (s("fc.b"), vec![128], rng.uniform(128, -0.1, 0.1)),
    ];
    (def, w)
}

fn spec() -> ModelSpec {
    ModelSpec { arch: Arch::Imported, input: SIZE, classes: 3, head: Head::ArcFace { s: 8.0, m: 0.3 } }
}

fn loss<B: Backend>(b: &mut B, net: &mut Net<B>, x: &[f32], labels: &[u32]) -> f64 {
    let xt = b.upload(x, &[labels.len(), 3, SIZE, SIZE]).unwrap();
    let lt = b.labels(labels).unwrap();
    let logits = net.forward_train(b, &xt, &lt).unwrap();
    let (l, _) = b.cross_entropy(&logits, &lt).unwrap();
    b.download(&l)[0] as f64
}

#[test]
fn graph_backward_matches_finite_differences() {
    let (def, w) = small_graph(1);
    let mut c = CpuBackend;
    let mut net = Net::pretrained(&mut c, spec(), def, w, 3).unwrap();
    let mut rng = Rng::new(2);
    let x = rng.uniform(3 * 3 * SIZE * SIZE, -2.0, 2.0);
    let labels = [0, 2, 1];
    loss(&mut c, &mut net, &x, &labels);
    let xt = c.upload(&x, &[3, 3, SIZE, SIZE]).unwrap();
    let lt = c.labels(&labels).unwrap();
    let logits = net.forward_train(&mut c, &xt, &lt).unwrap();
    let (_, probs) = c.cross_entropy(&logits, &lt).unwrap();
    let dl = c.cross_entropy_backward(&probs, &lt).unwrap();
    net.backward(&mut c, &dl).unwrap();
    let h = 1e-3f32;
    let mut checked = 0;
    for name in ["c1.w", "c1.b", "dw.w", "fc.w", "fc.b"] {
        let key = format!("{BACKBONE}{name}");
        let grad = c.download(net.params.grad(&key).unwrap());
        let base = c.download(net.params.get(&key));
        for i in [0, base.len() / 2, base.len() - 1] {
            let mut probe = |delta: f32| {
                let mut v = base.clone();
                v[i] += delta;
                let t = c.upload(&v, c.shape(net.params.get(&key)).to_vec().as_slice()).unwrap();
                net.params.set(&key, t);
                let l = loss(&mut c, &mut net, &x, &labels);
                let t = c.upload(&base, c.shape(net.params.get(&key)).to_vec().as_slice()).unwrap();
                net.params.set(&key, t);
                l
            };
            let fd = (probe(h) - probe(-h)) / (2.0 * h as f64);
            let g = grad[i] as f64;
            assert!(
                (fd - g).abs() <= 1e-4 + 1e-2 * fd.abs(),
                "{name}[{i}]: backward {g:.6e}, finite differences {fd:.6e}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
}

fn step<B: Backend>(b: &mut B, freeze: bool) -> Vec<(String, Vec<f32>)> {
    let (def, w) = small_graph(1);
    let mut net = Net::pretrained(b, spec(), def, w, 3).unwrap();
    net.freeze_backbone = freeze;
    let x = Rng::new(4).uniform(4 * 3 * SIZE * SIZE, -2.0, 2.0);
    let xt = b.upload(&x, &[4, 3, SIZE, SIZE]).unwrap();
    let lt = b.labels(&[0, 1, 2, 1]).unwrap();
    net.train_step(b, &xt, &lt, &Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 }).unwrap();
    let names: Vec<String> = net.params.params.iter().map(|p| p.name.clone()).collect();
    names
        .into_iter()
        .map(|n| {
            let v = b.download(net.params.get(&n));
            (n, v)
        })
        .collect()
}

#[test]
fn gpu_step_equals_the_reference_step_and_freezing_keeps_the_backbone() {
    let gpu = common::gpu();
    let mut g = GpuBackend::new(&gpu).unwrap();
    let (gs, cs) = (step(&mut g, false), step(&mut CpuBackend, false));
    for ((n, a), (_, b)) in gs.iter().zip(&cs) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 + 1e-4 * y.abs(), "{n}: {x} vs {y}");
        }
    }
    let (_, w0) = small_graph(1);
    let frozen = step(&mut g, true);
    for (name, _, v) in &w0 {
        let after = &frozen.iter().find(|(n, _)| *n == format!("{BACKBONE}{name}")).unwrap().1;
        assert_eq!(after, v, "{name} moved while frozen");
        let moved = &gs.iter().find(|(n, _)| *n == format!("{BACKBONE}{name}")).unwrap().1;
        assert_ne!(moved, v, "{name} did not move when not frozen");
    }
    let head = |s: &[(String, Vec<f32>)]| s.iter().find(|(n, _)| n == "head.weight").unwrap().1.clone();
    assert_eq!(head(&frozen), head(&gs), "the head's step does not depend on freezing");
}

#[test]
fn train_init_fine_tunes_an_imported_network() {
    use arcface::pipeline::train;
    let dir = std::env::temp_dir().join(format!("arcface-finetune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (def, w) = small_graph(7);
    let weights: BTreeMap<String, Loaded> =
        w.iter().map(|(n, s, v)| (n.clone(), Loaded { shape: s.clone(), values: v.clone() })).collect();
    let init = dir.join("imported.safetensors");
    model_file::save_graph(&init, &def, &weights).unwrap();
    let cfg = |epochs| common::fine_tune_config(&init, epochs, 1);
    let orl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/orl");
    let gpu = common::gpu();
    let run = dir.join("run");
    train::run(&gpu, &orl, &run, cfg(1), false, &Progress::hidden()).unwrap();
    let after1 = arcface::io::tensorfile::TensorFile::read(&run.join(train::LAST)).unwrap();
    for (name, _, v) in &w {
        assert_eq!(&after1.get(&format!("{BACKBONE}{name}")).unwrap().values, v, "{name} moved in the frozen epoch");
    }
    // Resume for a second, unfrozen epoch: the backbone moves.
    let o = train::run(&gpu, &orl, &run, cfg(2), true, &Progress::hidden()).unwrap();
    assert_eq!(o.metrics.len(), 2);
    let after2 = arcface::io::tensorfile::TensorFile::read(&run.join(train::LAST)).unwrap();
    assert_ne!(&after2.get(&format!("{BACKBONE}c1.w")).unwrap().values, &w[0].2);
    // The fine-tuned checkpoint is an ordinary one: it loads and predicts.
    let session = arcface::recognize::session::Session::open(&gpu, &run.join(train::LAST)).unwrap();
    let mut r = arcface::recognize::photo::Recognizer::new(session, None);
    let face = orl.join("s1/1.pgm");
    let p = r.answer_files(None, &[face], 3).unwrap();
    assert_eq!(p[0].result.as_ref().unwrap().top.len(), 3);
    assert_eq!(r.session.classes(), ["s1", "s2", "s3"]);
    std::fs::remove_dir_all(dir).unwrap();
}
