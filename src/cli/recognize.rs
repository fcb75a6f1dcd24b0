//! `arcface embed`, `predict`, `verify`, `eval-pairs`, `enroll` and `identify`.

use super::args::{AlignArgs, EmbedArgs, GpuArgs};
use super::output::{files, json};
use crate::data::dataset::Dataset;
use crate::detect::{Detector, Options};
use crate::gpu::Gpu;
use crate::progress::Progress;
use crate::recognize::embedding::dot;
use crate::recognize::gallery::Gallery;
use crate::recognize::session::Session;
use crate::recognize::verify;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// An inference session, aligning faces first when asked or when the
/// checkpoint was trained on aligned crops.
fn session<'g>(gpu: &'g Gpu, checkpoint: &Path, a: &AlignArgs) -> Result<Session<'g>> {
    let mut s = Session::open(gpu, checkpoint)?;
    if a.align || s.trained_on_aligned_faces() {
        s.align = Some(a.det.detector(gpu)?);
    }
    s.progress = Progress::new("images", 0, false);
    Ok(s)
}

/// A session for embeddings: alignment and flip as asked.
fn embed_session<'g>(gpu: &'g Gpu, checkpoint: &Path, e: &EmbedArgs) -> Result<Session<'g>> {
    let mut s = session(gpu, checkpoint, &e.align)?;
    s.flip = !e.no_flip;
    Ok(s)
}

#[derive(Args, Debug)]
pub struct EmbedCmd {
    /// Checkpoint (from `train`, `sweep` or `import`)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Images (face crops, or whole photos with --align)
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    emb: EmbedArgs,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl EmbedCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let results = embed_session(&gpu, &self.checkpoint, &self.emb)?.embed(&self.images)?;
        files(&results, "embedding", self.json, |e| {
            format!("[{}]", e.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(", "))
        })
    }
}

#[derive(Args, Debug)]
pub struct PredictCmd {
    /// Checkpoint (from `train`, `sweep` or `import`)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Images (face crops, or whole photos with --align)
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many people to list per image
    #[arg(long, default_value_t = 5)]
    top: usize,
    #[command(flatten)]
    align: AlignArgs,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl PredictCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let results = session(&gpu, &self.checkpoint, &self.align)?.predict(&self.images, self.top)?;
        files(&results, "predictions", self.json, |p| {
            p.iter().map(|p| format!("{} {:.3}", p.person, p.probability)).collect::<Vec<_>>().join(", ")
        })
    }
}

#[derive(Args, Debug)]
pub struct VerifyCmd {
    /// First photo
    a: PathBuf,
    /// Second photo
    b: PathBuf,
    /// Checkpoint (from `train`, `sweep` or `import`)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Same person at or above this similarity
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    #[command(flatten)]
    emb: EmbedArgs,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl VerifyCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let mut s = embed_session(&gpu, &self.checkpoint, &self.emb)?;
        let r = s.embed(&[self.a.clone(), self.b.clone()])?;
        for x in &r {
            if let Some(e) = &x.error {
                bail!("{e}");
            }
        }
        let sim = dot(r[0].result.as_ref().unwrap(), r[1].result.as_ref().unwrap());
        let (same, threshold) = (sim >= self.threshold, self.threshold);
        if self.json {
            println!("{}", serde_json::json!({"similarity": sim, "threshold": threshold, "same": same}));
        } else {
            println!(
                "similarity {sim:.4}: {} (threshold {threshold})",
                if same { "same person" } else { "different people" }
            );
        }
        Ok(true)
    }
}

#[derive(Args, Debug)]
pub struct EvalPairsCmd {
    /// Checkpoint (from `train`, `sweep` or `import`)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Pairs: a CSV of `a,b,same`, or LFW's pairs.txt (paths relative to
    /// its folder, or to --images)
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    pairs: Option<PathBuf>,
    /// Folder the --pairs paths are relative to (LFW: the folder of
    /// per-person folders)
    #[arg(long, requires = "pairs")]
    images: Option<PathBuf>,
    /// Or every pair of photos of a per-person folder
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where to write the ROC curve
    #[arg(long, default_value = "roc.png")]
    roc: PathBuf,
    #[command(flatten)]
    emb: EmbedArgs,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl EvalPairsCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let mut s = embed_session(&gpu, &self.checkpoint, &self.emb)?;
        let list = match (&self.pairs, &self.data) {
            (Some(p), _) => verify::read_pairs(p, self.images.as_deref())?,
            (None, Some(d)) => verify::all_pairs(&Dataset::scan(d, false)?),
            (None, None) => unreachable!("clap requires one"),
        };
        let (scored, failed) = verify::score_pairs(&mut s, &list)?;
        for (p, e) in &failed {
            eprintln!("left out (pairs with {}): {e}", p.display());
        }
        let m = verify::metrics(&scored);
        crate::plot::roc(&verify::roc(&scored), m.different, m.auc, m.eer)?
            .save(&self.roc)
            .with_context(|| format!("--roc {}: cannot write", self.roc.display()))?;
        if self.json {
            json(&m)?;
        } else {
            println!("{} pairs ({} same, {} different)", m.pairs, m.same, m.different);
            println!("accuracy {:.4} +- {:.4} ({} folds)", m.accuracy, m.accuracy_std, m.folds);
            println!("ROC AUC {:.4}", m.auc);
            println!("EER {:.4} (threshold {:.4})", m.eer, m.eer_threshold);
            println!("TAR at FAR 1e-2: {:.4}", m.tar_at_far_1e2);
            println!("TAR at FAR 1e-3: {:.4}", m.tar_at_far_1e3);
            println!("ROC curve: {}", self.roc.display());
        }
        Ok(failed.is_empty())
    }
}

#[derive(Args, Debug)]
pub struct EnrollCmd {
    /// Folder with one sub-folder of photos per person to enroll
    gallery_dir: PathBuf,
    /// Checkpoint (from `train`, `sweep` or `import`)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Gallery file to write
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    emb: EmbedArgs,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl EnrollCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let mut s = embed_session(&gpu, &self.checkpoint, &self.emb)?;
        let (g, failed) = Gallery::enroll(&mut s, &self.gallery_dir, &self.checkpoint)?;
        for (p, e) in &failed {
            eprintln!("not enrolled: {} ({e})", p.display());
        }
        g.save(&self.out)?;
        if self.json {
            let failed: Vec<_> =
                failed.iter().map(|(p, e)| serde_json::json!({ "path": p, "error": e.to_string() })).collect();
            json(&serde_json::json!({ "gallery": self.out, "meta": g.meta, "failed": failed }))?;
            return Ok(true);
        }
        println!(
            "{} people ({} photos) enrolled in {}; identify threshold {:.4}",
            g.meta.people.len(),
            g.meta.counts.iter().sum::<usize>(),
            self.out.display(),
            g.meta.threshold
        );
        Ok(true)
    }
}

#[derive(Args, Debug)]
pub struct IdentifyCmd {
    /// Photos to identify
    #[arg(required = true)]
    photos: Vec<PathBuf>,
    /// Gallery (from `arcface enroll`)
    #[arg(long)]
    gallery: PathBuf,
    /// Checkpoint (from `train`, `sweep` or `import`)
    #[arg(long)]
    checkpoint: PathBuf,
    /// How many people to list per photo
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl IdentifyCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let g = Gallery::load(&self.gallery)?;
        g.check_checkpoint(&self.gallery, &self.checkpoint)?;
        let mut s = Session::open(&gpu, &self.checkpoint)?;
        s.progress = Progress::new("images", 0, false);
        s.flip = g.meta.flip;
        if g.meta.align {
            s.align = Some(Detector::open(&gpu, None, Options::default())?);
        }
        let results: Vec<_> = s.embed(&self.photos)?.into_iter().map(|r| r.map(|e| g.identify(&e, self.top))).collect();
        files(&results, "identity", self.json, |id| {
            let list: Vec<String> = id.top.iter().map(|m| format!("{} {:.3}", m.person, m.score)).collect();
            format!("{} ({})", id.answer, list.join(", "))
        })
    }
}
