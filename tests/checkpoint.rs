//! Checkpoints: a round trip gives identical outputs; truncated, foreign and
//! mismatched files are refused with errors that name the file and the problem.

mod common;
use arcface::io::checkpoint::{self, CheckpointMeta};
use arcface::io::tensorfile::{write_atomic, TensorFile};
use arcface::kernels::check::Rng;
use arcface::models::{Arch, Head, ModelSpec, Net};
use arcface::nn::{Backend, GpuBackend};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("arcface-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("model.safetensors")
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("person{i}")).collect()
}

#[test]
fn round_trip_gives_identical_outputs() {
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    for spec in [
        ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 3, head: Head::ArcFace { s: 32.0, m: 0.5 } },
        ModelSpec { arch: Arch::MiniNet, input: 16, classes: 4, head: Head::Softmax },
    ] {
        let mut net = Net::init(&mut b, spec, 1).unwrap();
        let x = Rng::new(2).uniform(2 * 3 * spec.input * spec.input, -1.0, 1.0);
        let xt = b.upload(&x, &[2, 3, spec.input, spec.input]).unwrap();
        let before = net.logits(&mut b, &xt).unwrap();
        let before = b.download(&before);
        let path = tmp(&format!("{:?}", spec.arch));
        let mut meta = CheckpointMeta::new(spec, names(spec.classes));
        meta.metrics = serde_json::json!({ "val_loss": 0.5 });
        checkpoint::save(&path, &mut b, &net, &meta).unwrap();
        let (mut loaded, meta2) = checkpoint::load(&path, &mut b).unwrap();
        assert_eq!(meta2, meta);
        let after = loaded.logits(&mut b, &xt).unwrap();
        assert_eq!(b.download(&after), before, "{:?}", spec.arch);
    }
}

#[test]
fn truncated_file_is_refused_with_its_name() {
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let spec = ModelSpec { arch: Arch::MiniNet, input: 8, classes: 2, head: Head::Softmax };
    let net = Net::init(&mut b, spec, 1).unwrap();
    let path = tmp("truncated");
    checkpoint::save(&path, &mut b, &net, &CheckpointMeta::new(spec, names(2))).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", checkpoint::load(&path, &mut b).err().expect("refused"));
    assert!(err.contains(&path.display().to_string()) && err.contains("not a valid safetensors file"), "{err}");
    std::fs::write(&path, b"").unwrap();
    assert!(checkpoint::load(&path, &mut b).is_err());
}

/// Saves a fresh MiniNetwork (8x8, 2 people) at `path`, then rewrites the
/// file with the same tensors and metadata describing `claimed` instead.
fn save_with_false_metadata(b: &mut GpuBackend, path: &Path, claimed: ModelSpec) {
    let mini = ModelSpec { arch: Arch::MiniNet, input: 8, classes: 2, head: Head::Softmax };
    let net = Net::init(b, mini, 1).unwrap();
    checkpoint::save(path, b, &net, &CheckpointMeta::new(mini, names(2))).unwrap();
    let file = TensorFile::read(path).unwrap();
    let meta = CheckpointMeta::new(claimed, names(claimed.classes));
    let meta = HashMap::from([("arcface".to_string(), serde_json::to_string(&meta).unwrap())]);
    let tensors: BTreeMap<_, _> = file.tensors.into_iter().collect();
    write_atomic(path, &tensors, meta).unwrap();
}

#[test]
fn file_of_another_architecture_is_refused() {
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let path = tmp("foreign");
    let mfn = ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 2, head: Head::ArcFace { s: 32.0, m: 0.5 } };
    save_with_false_metadata(&mut b, &path, mfn);
    let err = format!("{:#}", checkpoint::load(&path, &mut b).err().expect("refused"));
    assert!(err.contains(&path.display().to_string()) && err.contains("does not belong to a MobileFaceNet"), "{err}");
    // A safetensors file that is not a checkpoint at all (a golden file).
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mininetwork16_step.safetensors");
    let err = format!("{:#}", checkpoint::load(&golden, &mut b).err().expect("refused"));
    assert!(err.contains("not an arcface checkpoint"), "{err}");
}

#[test]
fn shape_mismatch_names_the_parameter() {
    let gpu = common::gpu();
    let mut b = GpuBackend::new(&gpu).unwrap();
    let path = tmp("shape");
    let three = ModelSpec { arch: Arch::MiniNet, input: 8, classes: 3, head: Head::Softmax };
    save_with_false_metadata(&mut b, &path, three);
    let err = format!("{:#}", checkpoint::load(&path, &mut b).err().expect("refused"));
    assert!(err.contains("fc.weight") && err.contains("[2, 8192]"), "{err}");
}
