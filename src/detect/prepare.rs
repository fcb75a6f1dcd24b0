//! `arcface prepare RAW_DIR OUT_DIR`: whole photos in per-person folders to
//! aligned 112x112 face crops in the same structure (PNG), a labels CSV and a
//! report of the photos without a face (skipped) and with several faces (the
//! largest kept). `train --align` runs this into the run folder first.

/// The report `prepare` leaves beside the crops; a folder holding one is
/// aligned crops (training records that its model is shown aligned faces).
pub const REPORT: &str = "prepare_report.json";

use super::{align, Detector};
use crate::data::atomic_file;
use crate::data::dataset::Dataset;
use crate::progress::Progress;
use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub photos: usize,
    pub written: usize,
    /// Photos where no face was found (skipped).
    pub no_face: Vec<PathBuf>,
    /// Photos with several faces: (photo, faces found); the largest was kept.
    pub several_faces: Vec<(PathBuf, usize)>,
    /// Files that are not readable images, with why (skipped).
    pub unreadable: Vec<(PathBuf, String)>,
    pub seconds: f64,
}

/// Where a crop of `photo` (under `raw`) goes under `out`: same folders, PNG.
fn crop_path(raw: &Path, out: &Path, photo: &Path) -> PathBuf {
    let rel = photo.strip_prefix(raw).unwrap_or(photo);
    out.join(rel).with_extension("png")
}

/// `progress` counts photos (its length is set here where it is 0).
pub fn run(det: &mut Detector, raw: &Path, out: &Path, progress: &Progress) -> Result<Report> {
    let started = Instant::now();
    let data = Dataset::scan(raw, false)?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the output folder", out.display()))?;
    let mut report = Report { photos: data.samples.len(), ..Report::default() };
    for s in &data.skipped {
        report.unreadable.push((s.path.clone(), s.reason.clone()));
    }
    let mut labels = vec![["path".to_string(), "person".into(), "label".into()]];
    progress.expect(data.samples.len() as u64);
    progress.message("prepare".into());
    for s in &data.samples {
        progress.inc(1);
        let img = match crate::data::input::open_rgb(&s.path) {
            Ok(img) => img,
            Err(e) => {
                report.unreadable.push((s.path.clone(), format!("{e:#}")));
                continue;
            }
        };
        let faces = det.detect(&img)?;
        let Some(face) = faces.first() else {
            report.no_face.push(s.path.clone());
            continue;
        };
        if faces.len() > 1 {
            report.several_faces.push((s.path.clone(), faces.len()));
        }
        let dest = crop_path(raw, out, &s.path);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // A stopped run leaves no half file.
        atomic_file::write_png(&dest, &align::align(&img, face))?;
        let rel = dest.strip_prefix(out).unwrap_or(&dest);
        labels.push([rel.display().to_string(), data.people[s.label].clone(), s.label.to_string()]);
        report.written += 1;
    }
    report.seconds = started.elapsed().as_secs_f64();
    crate::data::csv_file::write(&out.join("labels.csv"), &labels)?;
    let mut f = std::fs::File::create(out.join(REPORT))?;
    writeln!(f, "{}", serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}
