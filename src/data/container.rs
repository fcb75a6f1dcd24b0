//! Images inside container files, addressed as `FILE#N`: record N of a
//! RecordIO file (`train.rec#17`, N its key in `train.idx`) or image N of a
//! verification set (`lfw.bin#17`). Such an address goes wherever a photo's
//! path goes (samples, splits, pairs, `open_rgb`), so datasets in these
//! formats train, evaluate and embed like folders of files.
//!
//! A container is opened once per process (its index or its pickle read)
//! and kept; each image is then one positioned read, so memory holds the
//! index, never the images.

use super::recordio::{self, Record};
use super::verification_bin::{self, Span};
use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// What a container file is, from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// MXNet RecordIO (`.rec`, with its `.idx`).
    Records,
    /// A verification set's pickle (`.bin`).
    Pairs,
}

impl Format {
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "rec" => Some(Format::Records),
            "bin" => Some(Format::Pairs),
            _ => None,
        }
    }
}

/// The address of image `n` of `container`.
pub fn image_path(container: &Path, n: u64) -> PathBuf {
    let mut s = container.as_os_str().to_owned();
    s.push(format!("#{n}"));
    PathBuf::from(s)
}

/// The container and number of an address (None for a plain path: one
/// without `#N`, or not naming a `.rec` or `.bin`).
pub fn address(path: &Path) -> Option<(PathBuf, u64)> {
    let s = path.to_str()?;
    let (file, n) = s.rsplit_once('#')?;
    let n = n.parse().ok()?;
    Format::of(Path::new(file))?;
    Some((PathBuf::from(file), n))
}

struct Opened {
    file: Mutex<std::fs::File>,
    len: u64,
    /// RecordIO: key -> byte offset; a verification set: image n -> span.
    records: HashMap<u64, u64>,
    images: Vec<Span>,
    format: Format,
}

fn cache() -> &'static Mutex<HashMap<PathBuf, Arc<Opened>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Arc<Opened>>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// The container, opened and indexed on first use.
fn opened(path: &Path) -> Result<Arc<Opened>> {
    if let Some(o) = cache().lock().expect("container cache").get(path) {
        return Ok(o.clone());
    }
    let format = Format::of(path).with_context(|| format!("{}: not a .rec or .bin file", path.display()))?;
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let meta = file.metadata().with_context(|| format!("{}: cannot read", path.display()))?;
    if !meta.is_file() {
        bail!("{}: not a file", path.display());
    }
    let (records, images) = match format {
        Format::Records => {
            let index = recordio::read_index(&recordio::index_path(path), meta.len())?;
            (index.into_iter().collect(), Vec::new())
        }
        Format::Pairs => (HashMap::new(), verification_bin::open(path)?.images),
    };
    let o = Arc::new(Opened { file: Mutex::new(file), len: meta.len(), records, images, format });
    cache().lock().expect("container cache").insert(path.to_path_buf(), o.clone());
    Ok(o)
}

/// The largest image a record or set may hold: the photo limit.
fn max_image_bytes() -> u64 {
    super::bounded::max_bytes(super::bounded::Kind::Input)
}

/// The bytes of the image at `path` when it is an address (None for a plain
/// path); errors name the address.
pub fn read(path: &Path) -> Option<Result<Vec<u8>>> {
    let (container, n) = address(path)?;
    Some(read_image(&container, n).with_context(|| format!("{}", path.display())))
}

fn read_image(container: &Path, n: u64) -> Result<Vec<u8>> {
    let o = opened(container)?;
    match o.format {
        Format::Records => Ok(read_record(&o, n)?.data),
        Format::Pairs => {
            let Some(s) = o.images.get(n as usize) else { bail!("no image {n}: the set has {}", o.images.len()) };
            if s.len > max_image_bytes() {
                bail!("an image of {:.1} MB (--max-file-mb)", s.len as f64 / 1e6);
            }
            let mut f = o.file.lock().expect("container file");
            f.seek(SeekFrom::Start(s.offset))?;
            let mut out = vec![0; s.len as usize];
            f.read_exact(&mut out)?;
            Ok(out)
        }
    }
}

fn read_record(o: &Opened, key: u64) -> Result<Record> {
    let Some(&at) = o.records.get(&key) else { bail!("no record {key} in the index") };
    let payload = {
        let mut f = o.file.lock().expect("container file");
        recordio::read_payload(&mut *f, o.len, at, max_image_bytes())?
    };
    Record::parse(&payload)
}

/// A RecordIO dataset's images: (key, label), in key order; records whose
/// header cannot be read are returned apart, with why. Only the headers are
/// read, counted on `progress`.
pub fn record_labels(rec: &Path, progress: &Progress) -> Result<(Vec<(u64, f32)>, Vec<(u64, String)>)> {
    let o = opened(rec)?;
    let mut keys: Vec<u64> = o.records.keys().copied().collect();
    keys.sort_unstable();
    // insightface's sets: record 0 a header naming the image range [1, end).
    let mut f = std::fs::File::open(rec).with_context(|| format!("{}: cannot read", rec.display()))?;
    let mut header = |key: u64| -> Result<Record> {
        let at = o.records[&key];
        recordio::read_header(&mut f, o.len, at, max_image_bytes())
    };
    if let Some(&0) = keys.first() {
        let h = header(0).with_context(|| format!("{}: record 0", rec.display()))?;
        if h.flag > 0 {
            let end = h.label().max(0.0) as u64;
            keys.retain(|&k| (1..end).contains(&k));
        }
    }
    let (mut ok, mut broken) = (Vec::with_capacity(keys.len()), Vec::new());
    progress.expect(keys.len() as u64);
    progress.message("reading the index".into());
    for k in keys {
        progress.inc(1);
        match header(k) {
            Ok(r) => ok.push((k, r.label())),
            Err(e) => broken.push((k, format!("{e:#}"))),
        }
    }
    progress.finish();
    Ok((ok, broken))
}
