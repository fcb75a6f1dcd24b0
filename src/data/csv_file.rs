//! CSV files (split.csv, labels.csv, pairs) through the `csv` crate: fields
//! with commas, quotes or newlines are quoted, and read back the same.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `rows` (the header first) to `path` atomically: beside it, then
/// renamed, so a stop never leaves half a file.
pub fn write<R: AsRef<[String]>>(path: &Path, rows: &[R]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.write_record(r.as_ref()).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))?;
    super::atomic_file::write(path, &bytes)
}

/// Every record of `path` (a header line too), each with its line number
/// (for errors that name the line).
pub fn read(path: &Path) -> Result<Vec<(u64, csv::StringRecord)>> {
    let bytes = super::bounded::read(path, super::bounded::Kind::Input)?;
    let mut r =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(bytes.as_slice());
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.with_context(|| format!("{}: not valid CSV", path.display()))?;
        let line = rec.position().map_or(0, |p| p.line());
        out.push((line, rec));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn awkward_fields_round_trip() {
        let dir = std::env::temp_dir().join(format!("arcface-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.csv");
        let rows = vec![
            vec!["path".to_string(), "person".into()],
            vec!["a, \"quoted\"\nname.png".into(), "Jean-Luc, Jr.".into()],
        ];
        super::write(&path, &rows).unwrap();
        let back = super::read(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(&back[1].1[0], "a, \"quoted\"\nname.png");
        assert_eq!(&back[1].1[1], "Jean-Luc, Jr.");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
