//! `arcface embed`, `predict`, `verify`, `eval-pairs`, `enroll` and
//! `identify`: photos (files or folders) through the one photo-to-answer
//! path (`recognize::photo`), each shown to the model as it was trained.

use super::args::{AlignArgs, DetectArgs, EmbedArgs, GpuArgs};
use super::output::{csv_rows, files, json};
use crate::data::dataset::{photos_in, Dataset};
use crate::data::input::Framing;
use crate::gpu::Gpu;
use crate::progress::Progress;
use crate::recognize::embedding::{dot, normalise};
use crate::recognize::gallery::Gallery;
use crate::recognize::photo::{Answer, Recognizer, UNKNOWN};
use crate::recognize::session::Session;
use crate::recognize::verify;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// The model in `checkpoint` shown photos as `framing` asks (default: as it
/// was trained), with the face detector when it is shown aligned faces.
fn recognizer<'g>(
    gpu: &'g Gpu,
    checkpoint: &Path,
    framing: Option<Framing>,
    det: &DetectArgs,
) -> Result<Recognizer<'g>> {
    let mut session = Session::open(gpu, checkpoint)?;
    session.framing = framing.unwrap_or(session.framing);
    let detector = match session.framing {
        Framing::AlignedFace => Some(det.detector(gpu)?),
        Framing::WholePhoto => None,
    };
    Ok(Recognizer { progress: Progress::new("images", 0, false), ..Recognizer::new(session, detector) })
}

/// A recognizer for embeddings: framing and flip as asked.
fn embedder<'g>(gpu: &'g Gpu, checkpoint: &Path, e: &EmbedArgs) -> Result<Recognizer<'g>> {
    let mut r = recognizer(gpu, checkpoint, e.align.framing(), &e.align.det)?;
    r.session.flip = !e.no_flip;
    Ok(r)
}

/// An answer's `--csv` cells, between the path and the error (`HEADER`).
fn answer_cells(a: &Answer) -> Vec<String> {
    let best = &a.top[0];
    let score = |v: Option<f32>| v.map_or(String::new(), |v| format!("{v:.4}"));
    let threshold = a.threshold.map_or(String::new(), |t| format!("{t:.4}"));
    vec![a.person.clone(), best.person.clone(), score(best.probability), score(best.cosine), threshold]
}

fn answer_header() -> Vec<String> {
    ["path", "person", "closest", "probability", "cosine", "threshold", "error"].map(String::from).to_vec()
}

#[derive(Args, Debug)]
pub struct EmbedCmd {
    /// Checkpoint (from `train`, `sweep` or `import`)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Photos, or folders of photos
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    emb: EmbedArgs,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print one CSV row per photo: path, then the embedding's values
    #[arg(long)]
    csv: bool,
}

impl EmbedCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let photos = photos_in(&self.images)?;
        let gpu = gpu.open()?;
        let results = embedder(&gpu, &self.checkpoint, &self.emb)?.embed_files(&photos)?;
        if self.csv {
            let d = results.iter().find_map(|r| r.result.as_ref()).map_or(0, |e| e.len());
            let mut header = vec!["path".to_string()];
            header.extend((0..d).map(|i| format!("e{i}")));
            header.push("error".into());
            return csv_rows(&results, header, |e| e.iter().map(|v| format!("{v:.6}")).collect());
        }
        files(&results, "embedding", self.json, |e| {
            format!("[{}]", e.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(", "))
        })
    }
}

#[derive(Args, Debug)]
pub struct PredictCmd {
    /// Checkpoint (from `train` or `sweep`: a classifier)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Photos, or folders of photos
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many people to list per image
    #[arg(long, default_value_t = 5)]
    top: usize,
    #[command(flatten)]
    align: AlignArgs,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print one CSV row per photo: path, person (or unknown), closest,
    /// probability, cosine, threshold, error
    #[arg(long)]
    csv: bool,
}

impl PredictCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let photos = photos_in(&self.images)?;
        let gpu = gpu.open()?;
        let mut r = recognizer(&gpu, &self.checkpoint, self.align.framing(), &self.align.det)?;
        if r.session.classes().is_empty() {
            bail!(crate::recognize::session::NAMES_NOBODY);
        }
        let results = r.answer_files(None, &photos, self.top)?;
        if self.csv {
            return csv_rows(&results, answer_header(), answer_cells);
        }
        if self.json {
            let rows: Vec<_> = results
                .iter()
                .map(|f| {
                    let mut row = serde_json::json!({ "path": f.path });
                    if let Some(a) = &f.result {
                        row["predictions"] = serde_json::to_value(&a.top).unwrap_or_default();
                        row["answer"] = a.person.clone().into();
                        row["threshold"] = a.threshold.into();
                    }
                    if let Some(e) = &f.error {
                        row["error"] = e.clone().into();
                    }
                    row
                })
                .collect();
            json(&rows)?;
            return Ok(results.iter().all(|r| r.error.is_none()));
        }
        files(&results, "predictions", false, |a| {
            let list: Vec<String> =
                a.top.iter().map(|p| format!("{} {:.3}", p.person, p.probability.unwrap_or(0.0))).collect();
            format!("{} ({})", a.person, list.join(", "))
        })
    }
}

/// Where `verify` takes its threshold from, and why.
fn threshold_from(path: &Path) -> Result<(f64, String)> {
    if let Ok(g) = Gallery::load(path) {
        return Ok((g.meta.threshold, format!("the identification threshold of gallery {}", path.display())));
    }
    let text = crate::data::bounded::read_to_string(path, crate::data::bounded::Kind::Input)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
        anyhow::anyhow!(
            "--threshold-from {}: neither a gallery (`arcface enroll`) nor the JSON of `arcface eval-pairs --json`",
            path.display()
        )
    })?;
    let t = v["threshold"].as_f64().with_context(|| format!("--threshold-from {}: no `threshold`", path.display()))?;
    Ok((t, format!("the accuracy-maximising threshold of eval-pairs in {}", path.display())))
}

#[derive(Args, Debug)]
pub struct VerifyCmd {
    /// First photo, or a folder of photos of one person (their mean)
    a: PathBuf,
    /// Second photo, or a folder of photos of one person
    b: PathBuf,
    /// Checkpoint (from `train`, `sweep` or `import`)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Same person at or above this similarity (default 0.5, or the one
    /// --threshold-from gives)
    #[arg(long, conflicts_with = "threshold_from")]
    threshold: Option<f64>,
    /// Take the threshold from a gallery (`arcface enroll`) or from the JSON
    /// `arcface eval-pairs --json` printed
    #[arg(long)]
    threshold_from: Option<PathBuf>,
    #[command(flatten)]
    emb: EmbedArgs,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

/// The L2-normalised mean of the embeddings of a photo or a folder's
/// photos; the first failure is the error.
fn template(r: &mut Recognizer, path: &Path) -> Result<Vec<f32>> {
    let photos = photos_in(&[path.to_path_buf()])?;
    let mut sum: Vec<f32> = Vec::new();
    for f in r.embed_files(&photos)? {
        let e = match (f.result, f.error) {
            (Some(e), _) => e,
            (None, e) => bail!("{}", e.unwrap_or_default()),
        };
        sum.resize(e.len(), 0.0);
        sum.iter_mut().zip(&e).for_each(|(a, b)| *a += b);
    }
    normalise(&mut sum);
    Ok(sum)
}

impl VerifyCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let (threshold, source) = match (&self.threshold, &self.threshold_from) {
            (Some(t), _) => (*t, "--threshold".to_string()),
            (None, Some(f)) => threshold_from(f)?,
            (None, None) => (0.5, "the default; --threshold-from takes a calibrated one".to_string()),
        };
        let gpu = gpu.open()?;
        let mut r = embedder(&gpu, &self.checkpoint, &self.emb)?;
        let sim = dot(&template(&mut r, &self.a)?, &template(&mut r, &self.b)?);
        let same = sim >= threshold;
        if self.json {
            println!(
                "{}",
                serde_json::json!({"similarity": sim, "threshold": threshold, "threshold_from": source, "same": same})
            );
        } else {
            println!(
                "similarity {sim:.4}: {} (threshold {threshold:.4}: {source})",
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
    #[arg(long, conflicts_with_all = ["data", "bin"], required_unless_present_any = ["data", "bin"])]
    pairs: Option<PathBuf>,
    /// Or a verification set as insightface distributes them (lfw.bin,
    /// cfp_fp.bin, agedb_30.bin, ...): its images are aligned crops, shown
    /// to the model as they are unless --align
    #[arg(long, conflicts_with = "data")]
    bin: Option<PathBuf>,
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
    /// How many of the worst false accepts and false rejects to list
    #[arg(long, default_value_t = 5)]
    worst: usize,
    #[command(flatten)]
    emb: EmbedArgs,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl EvalPairsCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let list = match (&self.pairs, &self.data, &self.bin) {
            (Some(p), _, _) => verify::read_pairs(p, self.images.as_deref())?,
            (_, Some(d), _) => verify::all_pairs(&Dataset::scan(d, false)?),
            (_, _, Some(bin)) => {
                let set = crate::data::verification_bin::open(bin)?;
                let image = |i: usize| crate::data::container::image_path(bin, i as u64);
                set.same.iter().enumerate().map(|(i, &same)| (image(2 * i), image(2 * i + 1), same)).collect()
            }
            (None, None, None) => unreachable!("clap requires one"),
        };
        let gpu = gpu.open()?;
        // A verification set's images are aligned crops already.
        let framing = self.emb.align.framing().or(self.bin.as_ref().map(|_| Framing::WholePhoto));
        let mut r = recognizer(&gpu, &self.checkpoint, framing, &self.emb.align.det)?;
        r.session.flip = !self.emb.no_flip;
        let (scored, failed) = verify::score_pairs(&mut r, &list)?;
        for (p, e) in &failed {
            eprintln!("left out (pairs with {}): {e}", p.display());
        }
        let pairs: Vec<verify::Pair> = scored.iter().map(|s| s.pair).collect();
        let m = verify::metrics(&pairs);
        let worst = verify::worst(&scored, m.threshold, self.worst);
        crate::plot::roc(&verify::roc(&pairs), m.different, m.auc, m.eer)?
            .save(&self.roc)
            .with_context(|| format!("--roc {}: cannot write", self.roc.display()))?;
        if self.json {
            let mut v = serde_json::to_value(&m)?;
            v["worst"] = serde_json::to_value(&worst)?;
            json(&v)?;
        } else {
            println!("{} pairs ({} same, {} different)", m.pairs, m.same, m.different);
            println!("accuracy {:.4} +- {:.4} ({} folds)", m.accuracy, m.accuracy_std, m.folds);
            println!(
                "accuracy {:.4} +- {:.4} as insightface's verification.py reports it ({}contiguous folds, \
                 distance thresholds 0 to 4 by 0.01)",
                m.insightface_accuracy,
                m.insightface_accuracy_std,
                if self.emb.no_flip { "" } else { "with flip, " }
            );
            println!("threshold {:.4} (the most accurate on all pairs; verify --threshold-from takes it)", m.threshold);
            println!("ROC AUC {:.4}", m.auc);
            println!("EER {:.4} (threshold {:.4})", m.eer, m.eer_threshold);
            println!("TAR at FAR 1e-2: {:.4}", m.tar_at_far_1e2);
            println!("TAR at FAR 1e-3: {:.4}", m.tar_at_far_1e3);
            for (title, list) in [("false accepts", &worst.false_accepts), ("false rejects", &worst.false_rejects)] {
                println!("worst {title} at the threshold: {}", if list.is_empty() { "none" } else { "" });
                for p in list {
                    println!("  {:.4}  {}  {}", p.score, p.a.display(), p.b.display());
                }
            }
            println!("ROC curve: {}", self.roc.display());
        }
        Ok(failed.is_empty())
    }
}

#[derive(Args, Debug)]
pub struct EnrollCmd {
    /// Who to enroll: a folder with one sub-folder of photos per person, a
    /// RecordIO set (train.rec), a folder of one person's photos, or photos
    /// (each person named by the photo's folder)
    #[arg(required = true)]
    people: Vec<PathBuf>,
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
        let mut r = embedder(&gpu, &self.checkpoint, &self.emb)?;
        let (g, failed) = r.enroll(&self.people, &self.checkpoint)?;
        for (_, e) in &failed {
            eprintln!("not enrolled: {e}");
        }
        g.save(&self.out)?;
        if self.json {
            let failed: Vec<_> =
                failed.iter().map(|(p, e)| serde_json::json!({ "path": p, "error": e.to_string() })).collect();
            json(&serde_json::json!({ "gallery": self.out, "meta": g.meta, "failed": failed }))?;
            return Ok(true);
        }
        println!(
            "{} people ({} photos, {}) enrolled in {}; identify threshold {:.4}",
            g.meta.people.len(),
            g.meta.counts.iter().sum::<usize>(),
            g.framing().name(),
            self.out.display(),
            g.meta.threshold
        );
        Ok(true)
    }
}

#[derive(Args, Debug)]
pub struct IdentifyCmd {
    /// Photos, or folders of photos, to identify
    #[arg(required = true)]
    photos: Vec<PathBuf>,
    /// Gallery (from `arcface enroll`)
    #[arg(long)]
    gallery: PathBuf,
    /// Checkpoint (default: the one the gallery was enrolled with)
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// How many people to list per photo
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print one CSV row per photo: path, person (or unknown), closest,
    /// probability (empty), cosine, threshold, error
    #[arg(long)]
    csv: bool,
    #[command(flatten)]
    det: DetectArgs,
}

impl IdentifyCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let photos = photos_in(&self.photos)?;
        let g = Gallery::load(&self.gallery)?;
        let checkpoint = match &self.checkpoint {
            Some(c) => c.clone(),
            None => g.enrolled_checkpoint(&self.gallery)?,
        };
        g.check_checkpoint(&self.gallery, &checkpoint)?;
        let gpu = gpu.open()?;
        // Shown as at enrolment, so that the scores compare.
        let mut r = recognizer(&gpu, &checkpoint, Some(g.framing()), &self.det)?;
        r.session.flip = g.meta.flip;
        let results: Vec<_> =
            r.embed_files(&photos)?.into_iter().map(|f| f.map(|e| g.identify(&e, self.top))).collect();
        let ok = if self.csv {
            csv_rows(&results, answer_header(), |id| {
                let (score, t) = (format!("{:.4}", id.best.score), format!("{:.4}", g.meta.threshold));
                vec![id.answer.clone(), id.best.person.clone(), String::new(), score, t]
            })?
        } else {
            files(&results, "identity", self.json, |id| {
                let list: Vec<String> = id.top.iter().map(|m| format!("{} {:.3}", m.person, m.score)).collect();
                format!("{} ({})", id.answer, list.join(", "))
            })?
        };
        let answered = |unknown: bool| {
            results.iter().filter(|f| f.result.as_ref().is_some_and(|id| (id.answer == UNKNOWN) == unknown)).count()
        };
        let (named, unknown) = (answered(false), answered(true));
        let no_face =
            results.iter().filter(|f| f.error.as_deref().is_some_and(|e| e.contains("no face found"))).count();
        let other = results.len() - named - unknown - no_face;
        eprintln!(
            "{named} named, {unknown} unknown, {no_face} without a face{} (threshold {:.4})",
            if other > 0 { format!(", {other} unreadable") } else { String::new() },
            g.meta.threshold
        );
        Ok(ok)
    }
}
