//! `arcface detect` and `prepare`.

use super::args::{DetectArgs, GpuArgs};
use super::output::{files, json};
use crate::detect::prepare;
use crate::progress::Progress;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DetectCmd {
    /// Photos to search for faces
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    det: DetectArgs,
    /// Write each photo with its boxes and landmarks drawn into this folder
    #[arg(long)]
    draw: Option<PathBuf>,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl DetectCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let mut detector = self.det.detector(&gpu)?;
        detector.progress = Progress::new("photos", 0, false);
        let results = detector.detect_files(&self.images, self.draw.as_deref())?;
        drop(detector);
        files(&results, "faces", self.json, |faces| {
            let mut s = format!("{} face(s)", faces.len());
            for f in faces {
                let b = f.bbox;
                s += &format!(
                    "\n  box [{:.1}, {:.1}, {:.1}, {:.1}] p {:.4} eyes ({:.1}, {:.1}) ({:.1}, {:.1})",
                    b[0],
                    b[1],
                    b[2],
                    b[3],
                    f.prob,
                    f.landmarks[0][0],
                    f.landmarks[0][1],
                    f.landmarks[1][0],
                    f.landmarks[1][1]
                );
            }
            s
        })
    }
}

#[derive(Args, Debug)]
pub struct PrepareCmd {
    /// Folder of per-person folders of photos
    raw: PathBuf,
    /// Where the crops go
    out: PathBuf,
    /// png: a crop file each in per-person folders; rec: one RecordIO set
    /// (train.rec, train.idx, property, names.txt), as insightface's
    /// training sets are distributed
    #[arg(long, value_enum, default_value_t = CropFormatArg::Png)]
    format: CropFormatArg,
    #[command(flatten)]
    det: DetectArgs,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CropFormatArg {
    Png,
    Rec,
}

impl PrepareCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let gpu = gpu.open()?;
        let mut d = self.det.detector(&gpu)?;
        let format = match self.format {
            CropFormatArg::Png => prepare::CropFormat::Png,
            CropFormatArg::Rec => prepare::CropFormat::Rec,
        };
        let r = prepare::run_as(&mut d, &self.raw, &self.out, format, &Progress::new("photos", 0, self.quiet))?;
        for (p, why) in &r.unreadable {
            eprintln!("skipped {}: {why}", p.display());
        }
        for p in &r.no_face {
            eprintln!("no face found, skipped: {}", p.display());
        }
        for (p, n) in &r.several_faces {
            eprintln!("{n} faces, the largest kept: {}", p.display());
        }
        if self.json {
            json(&r)?;
            return Ok(true);
        }
        println!(
            "{} of {} photos aligned into {} ({} without a face, {} with several) in {:.1} s; \
             labels.csv and prepare_report.json there",
            r.written,
            r.photos,
            self.out.display(),
            r.no_face.len(),
            r.several_faces.len(),
            r.seconds
        );
        Ok(true)
    }
}
