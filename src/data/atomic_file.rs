//! Files written whole or not at all: the bytes go to a hidden file beside
//! the destination, are synced, and replace it by a rename. A crash leaves
//! the old file or the new one; a failed write (a full disk) removes its
//! temporary file and leaves the old one as it was.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `path` atomically; an error names `path`, says why, and
/// that its previous contents are unchanged.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        let kept = if path.exists() { "the previous file is unchanged" } else { "nothing was written" };
        anyhow::Error::new(e).context(format!("{}: cannot write ({kept})", path.display()))
    })
}

/// `img` as a PNG file, written atomically.
pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .with_context(|| format!("{}: cannot encode the PNG", path.display()))?;
    write(path, &png)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("arcface-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.json");
        super::write(&f, b"one").unwrap();
        super::write(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // A folder that does not exist: the error names the file.
        let e = super::write(&dir.join("no/such/b.json"), b"x").unwrap_err();
        assert!(format!("{e:#}").contains("b.json: cannot write (nothing was written)"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
