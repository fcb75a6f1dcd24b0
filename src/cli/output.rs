//! Printing shared by the commands.

use crate::data::FileResult;
use anyhow::Result;
use serde::Serialize;

/// Prints a value as indented JSON.
pub fn json<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints per-file results; a file that failed is reported and the command
/// exits non-zero after the others are done.
pub fn files<T: Serialize>(results: &[FileResult<T>], as_json: bool, show: impl Fn(&T) -> String) -> Result<bool> {
    if as_json {
        json(results)?;
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
