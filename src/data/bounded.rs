//! Files read with a bound known before the first byte: a path that is not
//! a regular file (a device such as /dev/zero, a FIFO, a folder) is refused
//! from its metadata, and so is a file over the limit of its kind; the read
//! itself stops one byte past the limit, so a file that grows while it is
//! read cannot take more. Photos, CSV and JSON files share one limit
//! (`--max-file-mb`, by default the largest file a photo under
//! `--max-pixels` can be), model files (checkpoints, galleries, ONNX) have
//! their own (`--max-model-mb`).

use super::photo;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a file is, for its limit and the flag that sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Photos and the other inputs (CSV, JSON).
    Input,
    /// Checkpoints, imported networks, galleries, ONNX files.
    Model,
}

/// Model files: 2 GB, ONNX's own limit for one file (protobuf).
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 2_000_000_000;

/// 0: derived from the pixel limit.
static MAX_INPUT_BYTES: AtomicU64 = AtomicU64::new(0);
static MAX_MODEL_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_MAX_MODEL_BYTES);

/// The largest file a photo of `max_pixels` pixels can be: 16-bit RGBA
/// stored uncompressed (8 bytes a pixel, as PNG, PNM and BMP allow), plus
/// 1 MB of headers and metadata.
pub fn photo_bytes(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(8).saturating_add(1 << 20)
}

/// The limit for files of `kind` in this process.
pub fn max_bytes(kind: Kind) -> u64 {
    match kind {
        Kind::Input => match MAX_INPUT_BYTES.load(Ordering::Relaxed) {
            0 => photo_bytes(photo::max_pixels()),
            n => n,
        },
        Kind::Model => MAX_MODEL_BYTES.load(Ordering::Relaxed),
    }
}

/// Sets the limit for `kind` (`None`: the default).
pub fn set_max_bytes(kind: Kind, bytes: Option<u64>) {
    match kind {
        Kind::Input => MAX_INPUT_BYTES.store(bytes.map_or(0, |n| n.max(1)), Ordering::Relaxed),
        Kind::Model => MAX_MODEL_BYTES.store(bytes.unwrap_or(DEFAULT_MAX_MODEL_BYTES).max(1), Ordering::Relaxed),
    }
}

fn flag(kind: Kind) -> &'static str {
    match kind {
        Kind::Input => "--max-file-mb",
        Kind::Model => "--max-model-mb",
    }
}

fn what_it_is(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// Refuses, from its metadata alone, what `read` would refuse: a path that
/// is not a regular file or is over the limit of its kind (a path that
/// cannot be found is left to `read`).
pub fn refuse_unfit(path: &Path, kind: Kind) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) => check(path, &meta, kind, max_bytes(kind)),
        Err(_) => Ok(()),
    }
}

/// Refuses what is not a regular file of at most `max` bytes.
fn check(path: &Path, meta: &std::fs::Metadata, kind: Kind, max: u64) -> Result<()> {
    if !meta.is_file() {
        bail!("{}: {}, not a file; give a file", path.display(), what_it_is(meta.file_type()));
    }
    if meta.len() > max {
        bail!(
            "{}: {:.1} MB is over the limit of {:.1} MB for such files ({} raises it)",
            path.display(),
            meta.len() as f64 / 1e6,
            max as f64 / 1e6,
            flag(kind)
        );
    }
    Ok(())
}

/// The bytes of `path`, refused before reading when it is not a regular
/// file or is over the limit of its kind; errors name the file.
pub fn read(path: &Path, kind: Kind) -> Result<Vec<u8>> {
    let max = max_bytes(kind);
    let cannot = || format!("{}: cannot read", path.display());
    check(path, &std::fs::metadata(path).with_context(cannot)?, kind, max)?;
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    // A FIFO swapped in after the check would block `open` until a writer
    // came; non-blocking, it opens and is refused below.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut open, libc::O_NONBLOCK);
    let file = open.open(path).with_context(cannot)?;
    let meta = file.metadata().with_context(cannot)?;
    check(path, &meta, kind, max)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).with_context(cannot)?;
    if bytes.len() as u64 > max {
        bail!("{}: grew past the limit of {:.1} MB while read ({})", path.display(), max as f64 / 1e6, flag(kind));
    }
    Ok(bytes)
}

/// `read`, as UTF-8 text.
pub fn read_to_string(path: &Path, kind: Kind) -> Result<String> {
    String::from_utf8(read(path, kind)?).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_folders_and_large_files_are_refused_before_reading() {
        #[cfg(unix)]
        {
            let e = read(Path::new("/dev/zero"), Kind::Input).unwrap_err().to_string();
            assert!(e.contains("/dev/zero: a device"), "{e}");
        }
        let e = read(Path::new("."), Kind::Model).unwrap_err().to_string();
        assert!(e.contains("a folder"), "{e}");
        let dir = std::env::temp_dir().join(format!("arcface-bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("big.bin");
        // Sparse: a size without the bytes.
        std::fs::File::create(&f).unwrap().set_len(photo_bytes(photo::DEFAULT_MAX_PIXELS) + 1).unwrap();
        let e = read(&f, Kind::Input).unwrap_err().to_string();
        assert!(e.contains("over the limit of 321.0 MB") && e.contains("--max-file-mb"), "{e}");
        std::fs::write(&f, b"small").unwrap();
        assert_eq!(read(&f, Kind::Input).unwrap(), b"small");
        let e = format!("{:#}", read(&dir.join("missing"), Kind::Input).unwrap_err());
        assert!(e.contains("missing: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
