//! `arcface demo`: the whole pipeline on the bundled ORL faces (data/orl),
//! sized to finish in under ten minutes on a 2-core machine with lavapipe:
//! see `config` and BENCHMARKS.md for the measured time and accuracy.

use super::evaluate::{self, EvalReport};
use super::train::{self, TrainConfig, TrainOutcome, BEST};
use crate::gpu::Gpu;
use crate::models::{Arch, Head, ModelSpec};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// MiniNetwork at 16x16 on the first 10 ORL people. On lavapipe one epoch of
/// MiniNetwork at 32x32 over these 79 training images takes about two
/// minutes, MobileFaceNet at 112x112 longer: 16x16 keeps ten epochs within
/// minutes.
pub fn config() -> TrainConfig {
    TrainConfig {
        model: ModelSpec { arch: Arch::MiniNet, input: 16, classes: 0, head: Head::Softmax },
        epochs: 10,
        batch_size: 16,
        lr: 1e-3,
        momentum: 0.9,
        weight_decay: 0.0,
        lr_step: 3,
        lr_gamma: 0.5,
        seed: 0,
        max_people: 10,
        recalibrate_bn: false,
        align: false,
        init: None,
        freeze_backbone_epochs: 0,
    }
}

/// The bundled faces the demo trains on.
pub fn data() -> Result<PathBuf> {
    crate::data::bundled("orl")
}

pub struct DemoOutcome {
    pub training: TrainOutcome,
    pub test: EvalReport,
    pub seconds: f64,
}

/// Splits, trains (`config`) into `out` and evaluates the best checkpoint
/// on the test split.
pub fn run(gpu: &Gpu, out: &Path) -> Result<DemoOutcome> {
    let started = Instant::now();
    let training = train::run(gpu, &data()?, out, config(), false, false)?;
    let test = evaluate::run(gpu, &out.join(BEST), None, false)?;
    Ok(DemoOutcome { training, test, seconds: started.elapsed().as_secs_f64() })
}
