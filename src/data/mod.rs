//! Data: image files to normalised inputs, dataset folders and RecordIO
//! sets, verification sets, the stratified split, augmentation, batches
//! streamed by worker threads, and per-file results. Knows nothing of the
//! GPU or the networks.

pub mod atomic_file;
pub mod augment;
pub mod batch;
pub mod bounded;
pub mod container;
pub mod csv_file;
pub mod dataset;
pub mod file_result;
pub mod input;
pub mod loader;
pub mod photo;
pub mod recordio;
pub mod split;
pub mod verification_bin;

pub use batch::Batch;
pub use file_result::FileResult;

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
