//! `arcface gradcheck`: every kernel family, forward and backward, on the GPU
//! against its CPU reference, and every reference backward against finite
//! differences. The test suite runs the same functions.

use crate::check::{CheckRow, Rng};
use crate::gpu::Gpu;
use crate::kernels::{family, Family, FAMILIES};
use anyhow::{bail, Result};

/// The families selected by `--kernel` (all when `None`).
pub fn select(name: Option<&str>) -> Result<Vec<&'static Family>> {
    match name {
        None => Ok(FAMILIES.iter().collect()),
        Some(n) => match family(n) {
            Some(f) => Ok(vec![f]),
            None => {
                let names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
                bail!("--kernel: unknown kernel `{n}`; known: {}", names.join(", "))
            }
        },
    }
}

/// GPU-vs-reference rows, then reference-vs-finite-difference rows.
pub fn run(gpu: &Gpu, families: &[&Family], seed: u64) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for f in families {
        rows.extend((f.gradcheck)(gpu, &mut Rng::new(seed))?);
        rows.extend((f.refcheck)(&mut Rng::new(seed ^ 0x5eed)));
    }
    Ok(rows)
}

pub fn print_table(rows: &[CheckRow]) {
    println!(
        "{:<14} {:<30} {:<36} {:>10} {:>10} {:>18}  result",
        "kernel", "direction", "shape", "max|err|", "max rel", "tol (abs+rel*|ref|)"
    );
    for r in rows {
        println!(
            "{:<14} {:<30} {:<36} {:>10.2e} {:>10.2e} {:>18}  {}",
            r.kernel,
            r.direction,
            r.shape,
            r.max_abs_err,
            r.max_rel_err,
            format!("{:.0e}+{:.0e}", r.tol.atol, r.tol.rtol),
            if r.pass { "pass" } else { "FAIL" }
        );
        for m in &r.mismatches {
            println!("    {m}");
        }
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!("{} passed, {} failed", rows.len() - failed, failed);
}
