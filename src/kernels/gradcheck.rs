//! `arcface gradcheck`: every kernel family, forward and backward, on the GPU
//! against its CPU reference, and every reference backward against finite
//! differences. The test suite runs the same functions.

use super::check::{CheckRow, Rng};
use super::{family, Family, FAMILIES};
use crate::gpu::Gpu;
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
