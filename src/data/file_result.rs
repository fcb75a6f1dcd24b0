//! The outcome of one input file: its result, or why it failed. Commands
//! that take many files report each one and carry on past a bad file.

use serde::Serialize;
use std::path::PathBuf;

#[derive(Serialize, Debug)]
pub struct FileResult<T> {
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl<T> FileResult<T> {
    pub fn ok(path: PathBuf, result: T) -> FileResult<T> {
        FileResult { path, result: Some(result), error: None }
    }

    pub fn failed(path: PathBuf, error: &anyhow::Error) -> FileResult<T> {
        FileResult { path, result: None, error: Some(format!("{error:#}")) }
    }

    /// The same file's outcome with its result transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> FileResult<U> {
        FileResult { path: self.path, result: self.result.map(f), error: self.error }
    }
}
