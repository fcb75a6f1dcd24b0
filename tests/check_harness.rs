//! The checks themselves must be able to fail: a comparison that passed
//! everything would make every kernel test meaningless.

use arcface::kernels::check::{compare, finite_diff, Rng, Tol};

#[test]
fn compare_flags_an_error_just_over_tolerance() {
    let want = [1.0, -2.0, 100.0];
    let ok = [1.0 + 1e-5, -2.0, 100.0 + 0.009];
    assert!(compare("k", "d", "s", &ok, &want, Tol::FORWARD).pass);
    let bad = [1.0, -2.0, 100.0 + 0.0102]; // bound is 1e-5 + 1e-4 * 100 = 0.01001
    let row = compare("k", "d", "s", &bad, &want, Tol::FORWARD);
    assert!(!row.pass);
    assert_eq!(row.mismatches.len(), 1);
    assert!(row.mismatches[0].starts_with("[2]"));
}

#[test]
fn compare_rejects_nan_and_length_mismatch() {
    assert!(!compare("k", "d", "s", &[f64::NAN], &[0.0], Tol::BACKWARD).pass);
    assert!(!compare("k", "d", "s", &[0.0], &[f64::NAN], Tol::BACKWARD).pass);
    assert!(!compare("k", "d", "s", &[0.0, 0.0], &[0.0], Tol::BACKWARD).pass);
}

#[test]
fn finite_differences_catch_a_wrong_backward() {
    let mut rng = Rng::new(7);
    let x = vec![vec![0.3, -1.2, 2.0]];
    let dy = vec![1.0, 0.5, -2.0];
    let fwd = |v: &[Vec<f64>]| v[0].iter().map(|a| a * a).collect::<Vec<_>>();
    let right = |v: &[Vec<f64>], dy: &[f64]| vec![v[0].iter().zip(dy).map(|(a, d)| 2.0 * a * d).collect()];
    let wrong = |v: &[Vec<f64>], dy: &[f64]| vec![v[0].iter().zip(dy).map(|(a, d)| 2.001 * a * d).collect()];
    assert!(finite_diff("sq", "3", &["x"], &x, &dy, &fwd, &right, &mut rng).iter().all(|r| r.pass));
    assert!(finite_diff("sq", "3", &["x"], &x, &dy, &fwd, &wrong, &mut rng).iter().all(|r| !r.pass));
}
