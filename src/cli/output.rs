//! Printing shared by the commands.

use crate::data::FileResult;
use anyhow::Result;
use serde::Serialize;

/// Prints a value as indented JSON.
pub fn json<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints per-file results as CSV: `header` (path first, error last), then
/// one row per file, `cells` of its result between its path and its error
/// (empty cells for a file that failed). True when none failed.
pub fn csv_rows<T>(results: &[FileResult<T>], header: Vec<String>, cells: impl Fn(&T) -> Vec<String>) -> Result<bool> {
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    w.write_record(&header)?;
    let between = header.len().saturating_sub(2);
    for r in results {
        let mut row = vec![r.path.display().to_string()];
        match &r.result {
            Some(v) => row.extend(cells(v)),
            None => row.extend(std::iter::repeat_n(String::new(), between)),
        }
        row.push(r.error.clone().unwrap_or_default());
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(results.iter().all(|r| r.error.is_none()))
}

/// Prints per-file results; a file that failed is reported and the command
/// exits non-zero after the others are done. In JSON each file is
/// `{"path", KEY, "error"}`, KEY naming the payload (`embedding`, `faces`, ...).
pub fn files<T: Serialize>(
    results: &[FileResult<T>],
    key: &str,
    as_json: bool,
    show: impl Fn(&T) -> String,
) -> Result<bool> {
    if as_json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                let mut row = serde_json::Map::new();
                row.insert("path".into(), serde_json::to_value(&r.path)?);
                if let Some(v) = &r.result {
                    row.insert(key.into(), serde_json::to_value(v)?);
                }
                if let Some(e) = &r.error {
                    row.insert("error".into(), e.clone().into());
                }
                Ok(serde_json::Value::Object(row))
            })
            .collect::<Result<_>>()?;
        json(&rows)?;
    } else {
        for r in results {
            match (&r.result, &r.error) {
                (Some(v), _) => println!("{}: {}", r.path.display(), show(v)),
                (None, Some(e)) => eprintln!("error: {e}"),
                (None, None) => {}
            }
        }
    }
    Ok(results.iter().all(|r| r.error.is_none()))
}
