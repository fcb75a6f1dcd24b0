//! Data: dataset folders, the stratified split, augmentation.

pub mod augment;
pub mod dataset;
pub mod split;
