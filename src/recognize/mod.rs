//! Recognition with a trained or imported model: a `session` turns photos
//! into embeddings or predictions; `verify` scores pairs, `gallery` enrolls
//! and identifies people; `embedding` holds the vector arithmetic they share.

pub mod answer;
pub mod bench;
pub mod embedding;
pub mod gallery;
pub mod photo;
pub mod session;
pub mod verify;
