//! Data: dataset folders, the stratified split, augmentation.

pub mod augment;
pub mod dataset;
pub mod split;

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// A path under the bundled `data/` folder, found next to the binary's
/// sources or in the working folder.
pub fn bundled(rel: &str) -> Result<PathBuf> {
    for root in [Path::new(env!("CARGO_MANIFEST_DIR")), Path::new(".")] {
        let p = root.join("data").join(rel);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("the bundled data/{rel} was not found; run from the repository or pass its path")
}
