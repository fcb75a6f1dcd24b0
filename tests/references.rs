//! Each CPU reference's backward against central finite differences in f64.

use arcface::kernels::check::Rng;
use arcface::kernels::FAMILIES;

#[test]
fn every_reference_backward_matches_finite_differences() {
    for f in FAMILIES {
        for seed in [1, 2] {
            let rows = (f.refcheck)(&mut Rng::new(seed));
            assert!(!rows.is_empty(), "{}: no reference checks", f.name);
            for r in &rows {
                assert!(
                    r.pass,
                    "{} {} {}: max abs {:.3e} {:?}",
                    r.kernel, r.direction, r.shape, r.max_abs_err, r.mismatches
                );
            }
        }
    }
}
