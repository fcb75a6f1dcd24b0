//! Reading and writing named tensors in safetensors files (checkpoints and
//! the PyTorch golden files). Errors name the file and what is wrong.

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A tensor read from a file, converted to f32 (integer labels too).
#[derive(Clone, Debug)]
pub struct Loaded {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

pub struct TensorFile {
    pub tensors: HashMap<String, Loaded>,
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    pub fn read(path: &Path) -> Result<TensorFile> {
        let bytes = crate::data::bounded::read(path, crate::data::bounded::Kind::Model)?;
        Self::parse(&bytes).with_context(|| format!("{}: not a valid safetensors file", path.display()))
    }

    pub fn parse(bytes: &[u8]) -> Result<TensorFile> {
        let (_, meta) = SafeTensors::read_metadata(bytes)?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(bytes)?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                Dtype::I64 => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
                other => bail!("tensor `{name}` has dtype {other:?}; only F32 and I64 are read"),
            };
            tensors.insert(name, Loaded { shape: view.shape().to_vec(), values });
        }
        Ok(TensorFile { tensors, metadata })
    }

    pub fn get(&self, name: &str) -> Result<&Loaded> {
        self.tensors.get(name).with_context(|| format!("no tensor `{name}`"))
    }
}

/// Writes f32 tensors and string metadata atomically: to a temporary file in
/// the same folder, flushed, then renamed over the target, so a crash never
/// leaves a half-written file where a good one was.
pub fn write_atomic(path: &Path, tensors: &BTreeMap<String, Loaded>, metadata: HashMap<String, String>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>)> =
        tensors.iter().map(|(k, t)| (k.clone(), t.values.iter().flat_map(|v| v.to_le_bytes()).collect())).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), (_, b))| Ok((name.clone(), TensorView::new(Dtype::F32, t.shape.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::tensor::serialize(views, Some(metadata))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    crate::data::atomic_file::write(path, &data)
}
