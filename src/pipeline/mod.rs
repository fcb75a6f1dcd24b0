//! Training runs and what follows them: `train` (epochs of SGD, validation,
//! checkpoints, resume), `sweep` (a grid of learning rates and momenta),
//! `evaluate` (the test split), `calibrate` (a classifier's open-set threshold), `report` (metrics and plots), `demo` (the
//! whole pipeline on the bundled faces) and `bench` (training throughput).

pub mod bench;
pub mod calibrate;
pub mod demo;
pub mod evaluate;
pub mod report;
pub mod scoring;
pub mod sweep;
pub mod train;
