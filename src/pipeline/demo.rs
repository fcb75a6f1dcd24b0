//! `arcface demo`: the whole pipeline on the bundled ORL faces (data/orl),
//! sized to finish in under ten minutes on a 2-core machine with lavapipe:
//! see `config` and BENCHMARKS.md for the measured time and accuracy.

use super::evaluate::{self, EvalReport};
use super::train::{self, TrainConfig, TrainOutcome, BEST};
use crate::data::split::{TEST_FRACTION, VAL_FRACTION};
use crate::gpu::Gpu;
use crate::models::{Arch, ModelSpec, DEFAULT_ARCFACE};
use crate::progress::Progress;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// MobileFaceNet + ArcFace from scratch on all 40 ORL people (320 training
/// images) with the seed recipe: SGD, momentum 0.9, weight decay 5e-4, lr
/// 0.1 halved every 3 epochs, batch 16, augmentation, and precise BN after
/// each epoch (20 steps an epoch leave the running statistics behind the
/// weights). Six epochs take six to nine minutes on a 2-core machine with
/// lavapipe (BENCHMARKS.md, "The demo").
pub fn config() -> TrainConfig {
    TrainConfig {
        model: ModelSpec { arch: Arch::MobileFaceNet, input: 112, classes: 0, head: DEFAULT_ARCFACE },
        epochs: 6,
        batch_size: 16,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        lr_step: 3,
        lr_gamma: 0.5,
        seed: 0,
        max_people: 0,
        recalibrate_bn: true,
        align: false,
        init: None,
        freeze_backbone_epochs: 0,
        data: None,
        val_fraction: VAL_FRACTION,
        test_fraction: TEST_FRACTION,
        precision: Default::default(),
        val_bins: Vec::new(),
        loader_threads: 0,
    }
}

/// The bundled faces the demo trains on by default.
pub fn data() -> Result<PathBuf> {
    crate::data::bundled("orl")
}

pub struct DemoOutcome {
    pub training: TrainOutcome,
    pub test: EvalReport,
    pub seconds: f64,
}

/// Splits `data` (one folder per person), trains (`config`) into `out` and
/// evaluates the best checkpoint on the test split.
pub fn run(gpu: &Gpu, data: &Path, out: &Path, progress: &Progress) -> Result<DemoOutcome> {
    let started = Instant::now();
    let training = train::run(gpu, data, out, config(), false, progress)?;
    let test = evaluate::run(gpu, &out.join(BEST), None, false)?;
    Ok(DemoOutcome { training, test, seconds: started.elapsed().as_secs_f64() })
}
