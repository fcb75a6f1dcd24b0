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
