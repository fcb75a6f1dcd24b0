//! `arcface prepare RAW_DIR OUT_DIR`: whole photos in per-person folders to
//! aligned 112x112 face crops in the same structure (PNG), or as one
//! RecordIO set (`--format rec`: `train.rec`, `train.idx`, `property` and
//! `names.txt`, the layout insightface's `arcface_torch` reads, PNG images),
//! a labels CSV and a report of the photos without a face (skipped) and with
//! several faces (the largest kept). `train --align` runs this into the run
//! folder first.

/// The report `prepare` leaves beside the crops; a folder holding one is
/// aligned crops (training records that its model is shown aligned faces).
pub const REPORT: &str = "prepare_report.json";

use super::{align, Detector};
use crate::data::dataset::Dataset;
use crate::data::{atomic_file, input};
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

/// How the crops are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CropFormat {
    /// A PNG file each, in per-person folders.
    #[default]
    Png,
    /// One RecordIO set, `train.rec` (the people in `names.txt`).
    Rec,
}

/// `progress` counts photos (its length is set here where it is 0).
pub fn run(det: &mut Detector, raw: &Path, out: &Path, progress: &Progress) -> Result<Report> {
    run_as(det, raw, out, CropFormat::Png, progress)
}

/// `run`, writing the crops in `format`.
pub fn run_as(det: &mut Detector, raw: &Path, out: &Path, format: CropFormat, progress: &Progress) -> Result<Report> {
    let started = Instant::now();
    let data = Dataset::scan(raw, false)?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the output folder", out.display()))?;
    let mut report = Report { photos: data.samples.len(), ..Report::default() };
    for s in &data.skipped {
        report.unreadable.push((s.path.clone(), s.reason.clone()));
    }
    let mut labels = vec![["path".to_string(), "person".into(), "label".into()]];
    let rec = out.join("train.rec");
    let mut records = match format {
        CropFormat::Rec => Some(crate::data::recordio::DatasetWriter::create(&rec)?),
        CropFormat::Png => None,
    };
    progress.expect(data.samples.len() as u64);
    progress.message("prepare".into());
    // Photos decoded a core's worth at a time, then detected in turn.
    let decoded = data
        .samples
        .chunks(input::decoders())
        .flat_map(|chunk| input::open_rgb_each(&chunk.iter().map(|s| s.path.clone()).collect::<Vec<_>>()));
    for (s, img) in data.samples.iter().zip(decoded) {
        progress.inc(1);
        let img = match img {
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
        let crop = align::align(&img, face);
        let rel = match &mut records {
            Some(w) => {
                let mut png = Vec::new();
                crop.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
                w.push(s.label as u32, png)?;
                crate::data::container::image_path(Path::new("train.rec"), report.written as u64 + 1)
            }
            None => {
                let dest = crop_path(raw, out, &s.path);
                if let Some(dir) = dest.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                // A stopped run leaves no half file.
                atomic_file::write_png(&dest, &crop)?;
                dest.strip_prefix(out).unwrap_or(&dest).to_path_buf()
            }
        };
        labels.push([rel.display().to_string(), data.people[s.label].clone(), s.label.to_string()]);
        report.written += 1;
    }
    if let Some(w) = records {
        w.finish((align::SIZE, align::SIZE))?;
        let names: String = data.people.iter().map(|n| format!("{n}\n")).collect();
        atomic_file::write(&out.join("names.txt"), names.as_bytes())?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    crate::data::csv_file::write(&out.join("labels.csv"), &labels)?;
    let mut f = std::fs::File::create(out.join(REPORT))?;
    writeln!(f, "{}", serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}
