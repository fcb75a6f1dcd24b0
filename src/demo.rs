//! `arcface demo`: the whole pipeline on the bundled ORL faces (data/orl),
//! sized to finish in under ten minutes on a 2-core machine with lavapipe:
//! see DEMO below and BENCHMARKS.md for the measured time and accuracy.

use crate::gpu::Gpu;
use crate::models::{Arch, Head, ModelSpec};
use crate::train::{self, TrainConfig, BEST};
use anyhow::{bail, Result};
use std::path::Path;
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

pub fn run(gpu: &Gpu, out: &Path) -> Result<()> {
    let started = Instant::now();
    let data = crate::data::bundled("orl")?;
    let cfg = config();
    println!(
        "demo: {:?} at {}x{} on the first {} people of {} (ORL faces, credit Olivetti Research Laboratory), {} epochs",
        cfg.model.arch,
        cfg.model.input,
        cfg.model.input,
        cfg.max_people,
        data.display(),
        cfg.epochs
    );
    let o = train::run(gpu, &data, out, cfg, false, false)?;
    let r = crate::evaluate::run(gpu, &out.join(BEST), None, false)?;
    crate::evaluate::print(&r);
    println!("\ntest accuracy {:.3} on {} images, in {:.0} s", r.accuracy, r.images, started.elapsed().as_secs_f64());
    println!("best checkpoint  {}", out.join(BEST).display());
    println!("metrics          {} and metrics.json", out.join("metrics.csv").display());
    println!("learning curves  {}", out.join("curves.png").display());
    println!("labels and split {}", out.join(train::SPLIT).display());
    if let Some(why) = o.diverged {
        bail!("training stopped early: {why}");
    }
    Ok(())
}
