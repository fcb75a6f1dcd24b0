//! The command line as a user runs it.

use std::process::Command;

fn arcface(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arcface")).args(args).output().unwrap()
}

#[test]
fn gradcheck_one_kernel_prints_a_table_and_succeeds() {
    let out = arcface(&["gradcheck", "--kernel", "sgd", "--seed", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("sgd") && stdout.contains("update velocity") && stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn gradcheck_json_is_machine_readable() {
    let out = arcface(&["gradcheck", "--kernel", "residual", "--json"]);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["pass"] == true && r["tol"]["atol"].is_number()));
}

#[test]
fn unknown_kernel_names_the_flag() {
    let out = arcface(&["gradcheck", "--kernel", "nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("--kernel") && stderr.contains("`nope`") && stderr.contains("conv2d"), "{stderr}");
}

#[test]
fn info_json_reports_the_adapter() {
    let out = arcface(&["info", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["name"].is_string() && r["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
}

#[test]
fn bench_kernels_runs_a_small_case() {
    let out = arcface(&["bench", "kernels", "--kernel", "l2norm", "--batch", "4", "--repeats", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row["median_ms"].as_f64().unwrap() > 0.0));
}

mod infer {
    use super::arcface;
    use ::arcface::checkpoint::{self, CheckpointMeta};
    use ::arcface::gpu::Gpu;
    use ::arcface::models::{Arch, Head, ModelSpec, Net};
    use ::arcface::nn::GpuBackend;
    use std::path::PathBuf;

    /// A fresh (untrained) MobileFaceNet checkpoint with two people.
    fn checkpoint(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("arcface-cli-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gpu = Gpu::new().unwrap();
        let mut b = GpuBackend::new(&gpu).unwrap();
        let spec =
            ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 2, head: Head::ArcFace { s: 32.0, m: 0.5 } };
        let net = Net::init(&mut b, spec, 1).unwrap();
        let path = dir.join("m.safetensors");
        checkpoint::save(&path, &mut b, &net, &CheckpointMeta::new(spec, vec!["alice".into(), "bob".into()])).unwrap();
        (path, dir)
    }

    fn face(name: &str) -> String {
        format!("{}/tests/fixtures/faces/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn predict_names_people_and_reports_bad_files_separately() {
        let (ckpt, dir) = checkpoint("predict");
        let text = dir.join("notes.png");
        std::fs::write(&text, "not an image").unwrap();
        let missing = dir.join("missing.jpg");
        let args = [
            "predict",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            &face("s1_1.pgm"),
            text.to_str().unwrap(),
            missing.to_str().unwrap(),
            &face("s2_1.pgm"),
            "--top",
            "2",
            "--json",
        ];
        let out = arcface(&args);
        assert_eq!(out.status.code(), Some(1), "a bad file makes the exit code non-zero");
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 4);
        for i in [0, 3] {
            let preds = rows[i]["result"].as_array().unwrap();
            assert_eq!(preds.len(), 2);
            let p: f64 = preds.iter().map(|p| p["probability"].as_f64().unwrap()).sum();
            assert!((p - 1.0).abs() < 1e-4 && ["alice", "bob"].contains(&preds[0]["person"].as_str().unwrap()));
        }
        assert!(rows[1]["error"].as_str().unwrap().contains("notes.png: not a readable image"));
        assert!(rows[2]["error"].as_str().unwrap().contains("missing.jpg: cannot open"));
    }

    #[test]
    fn embed_gives_unit_vectors() {
        let (ckpt, _) = checkpoint("embed");
        let out = arcface(&["embed", "--checkpoint", ckpt.to_str().unwrap(), &face("s1_1.pgm"), "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let e: Vec<f64> = rows[0]["result"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(e.len(), 128);
        assert!((e.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-4);
    }

    #[test]
    fn missing_checkpoint_is_named() {
        let out = arcface(&["predict", "--checkpoint", "/nonexistent/c.safetensors", &face("s1_1.pgm")]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/c.safetensors: cannot read"));
    }

    #[test]
    fn info_model_prints_the_papers_numbers() {
        let out = arcface(&["info", "--model", "mobilefacenet", "--json"]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["parameters"], 1_003_136 + 10 * 128);
        let out = arcface(&["info", "--model", "mininet", "--input", "16", "--classes", "10", "--json"]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["parameters"], 32 * 27 + 32 + 64 * 288 + 64 + 128 * 576 + 128 + 10 * 32768 + 10);
    }
}
