//! A dataset folder: one sub-folder per person, image files inside. Files
//! that cannot be decoded are listed with the reason and skipped, never a
//! crash; people are labelled in name order, numbers by value (s2 < s10).

use super::input;
use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "pgm", "bmp"];

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub root: PathBuf,
    /// Person names; index = label.
    pub people: Vec<String>,
    pub samples: Vec<Sample>,
    /// Unreadable or non-image files, with why.
    pub skipped: Vec<Skipped>,
}

/// Orders names with their numbers by value (s2 before s10).
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut parts = Vec::new();
    let (mut text, mut num) = (String::new(), String::new());
    for ch in name.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
        } else {
            if !num.is_empty() {
                parts.push((std::mem::take(&mut text), num.parse().unwrap_or(u64::MAX)));
                num.clear();
            }
            text.push(ch);
        }
    }
    parts.push((text, num.parse().unwrap_or(0)));
    parts
}

fn is_image_name(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The photos named on a command line: a file as it is, a folder as the
/// image files in it and its sub-folders (in name order, numbers by value).
pub fn photos_in(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot read the folder", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        entries.sort_by_key(|f| natural_key(&f.file_name().unwrap_or_default().to_string_lossy()));
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if is_image_name(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let before = out.len();
            walk(p, &mut out)?;
            if out.len() == before {
                bail!("{}: no photos in this folder ({})", p.display(), EXTENSIONS.join(", "));
            }
        } else {
            // A device or an oversized file named here stops the command
            // before any work; a missing one is that file's own error.
            super::bounded::refuse_unfit(p, super::bounded::Kind::Input)?;
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The record file of a RecordIO dataset at `root`: `root` itself when it
/// is a `.rec` file, or the `train.rec` in the folder `root`.
pub fn record_file(root: &Path) -> Option<PathBuf> {
    let rec = if root.is_dir() { root.join("train.rec") } else { root.to_path_buf() };
    (rec.is_file() && super::container::Format::of(&rec) == Some(super::container::Format::Records)).then_some(rec)
}

/// Why each file does not decode (None: it does), decoded a core's worth
/// at a time.
fn decode_errors(files: &[PathBuf]) -> Vec<Option<String>> {
    files
        .chunks(input::decoders())
        .flat_map(input::open_rgb_each)
        .map(|r| r.err().map(|e| format!("{:#}", e.root_cause())))
        .collect()
}

impl Dataset {
    /// Scans `root`: a folder of per-person folders, or a RecordIO dataset
    /// (`record_file`). With `decode`, every image file is decoded once so
    /// that broken files are found now rather than in the middle of
    /// training (a RecordIO set's records are checked from their headers;
    /// an image that fails to decode later is skipped where it is read).
    pub fn scan(root: &Path, decode: bool) -> Result<Dataset> {
        if let Some(rec) = record_file(root) {
            return Dataset::from_records(&rec, &Progress::hidden());
        }
        let entries =
            std::fs::read_dir(root).with_context(|| format!("{}: cannot read the dataset folder", root.display()))?;
        let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
        dirs.sort_by_key(|d| natural_key(&d.file_name().unwrap_or_default().to_string_lossy()));
        let mut people = Vec::new();
        let mut samples = Vec::new();
        let mut skipped = Vec::new();
        for dir in dirs {
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if name.starts_with('.') {
                continue;
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("{}: cannot read", dir.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort_by_key(|f| natural_key(&f.file_name().unwrap_or_default().to_string_lossy()));
            let label = people.len();
            let mut count = 0;
            let (images, others): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| is_image_name(f));
            for f in others {
                skipped
                    .push(Skipped { path: f, reason: format!("not an image file name ({})", EXTENSIONS.join(", ")) });
            }
            let errors = if decode { decode_errors(&images) } else { vec![None; images.len()] };
            for (f, error) in images.into_iter().zip(errors) {
                match error {
                    Some(reason) => skipped.push(Skipped { path: f, reason }),
                    None => {
                        samples.push(Sample { path: f, label });
                        count += 1;
                    }
                }
            }
            if count > 0 {
                people.push(name);
            } else {
                skipped.push(Skipped { path: dir, reason: "no readable images: person left out".into() });
            }
        }
        if people.is_empty() {
            bail!("{}: no person folders with readable images (expected one sub-folder per person)", root.display());
        }
        Ok(Dataset { root: root.to_path_buf(), people, samples, skipped })
    }

    /// The images of a RecordIO file, labelled by their records: people are
    /// the labels present, in numeric order, named by the lines of a
    /// `names.txt` beside the file (line k: label k) or by the label's
    /// number. Only the index and the record headers are read, counted on
    /// `progress`.
    pub fn from_records(rec: &Path, progress: &Progress) -> Result<Dataset> {
        let (records, broken) = super::container::record_labels(rec, progress)?;
        let names_file = rec.with_file_name("names.txt");
        let names: Vec<String> = if names_file.is_file() {
            super::bounded::read_to_string(&names_file, super::bounded::Kind::Input)?
                .lines()
                .map(|l| l.trim().to_string())
                .collect()
        } else {
            Vec::new()
        };
        let mut skipped: Vec<Skipped> = broken
            .into_iter()
            .map(|(k, reason)| Skipped { path: super::container::image_path(rec, k), reason })
            .collect();
        let mut labelled = Vec::with_capacity(records.len());
        for (key, l) in records {
            let path = super::container::image_path(rec, key);
            if l >= 0.0 && l.fract() == 0.0 && l < u32::MAX as f32 {
                labelled.push((l as u32, path));
            } else {
                skipped.push(Skipped { path, reason: format!("the label {l} is not a class number") });
            }
        }
        let mut labels: Vec<u32> = labelled.iter().map(|(l, _)| *l).collect();
        labels.sort_unstable();
        labels.dedup();
        let people = labels
            .iter()
            .map(|&l| names.get(l as usize).filter(|n| !n.is_empty()).cloned().unwrap_or_else(|| l.to_string()))
            .collect();
        let samples = labelled
            .into_iter()
            .map(|(l, path)| Sample { path, label: labels.binary_search(&l).expect("collected above") })
            .collect::<Vec<_>>();
        if samples.is_empty() {
            bail!("{}: no image records", rec.display());
        }
        let root = rec.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok(Dataset { root, people, samples, skipped })
    }

    /// People from command-line paths: a folder of per-person folders or a
    /// RecordIO set (as `scan`), a folder of one person's photos (named by
    /// the folder), or photo files (each named by its folder). The same name in several
    /// paths is one person.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Dataset> {
        let mut people: Vec<String> = Vec::new();
        let mut samples = Vec::new();
        let mut skipped = Vec::new();
        let mut add = |name: String, path: PathBuf| {
            let label = people.iter().position(|p| *p == name).unwrap_or_else(|| {
                people.push(name);
                people.len() - 1
            });
            samples.push(Sample { path, label });
        };
        // Named by the folder's own name, also for `.` or a trailing `/`.
        let name_of = |p: &Path| {
            let p = std::fs::canonicalize(p).unwrap_or(p.to_path_buf());
            p.file_name().map_or(String::new(), |n| n.to_string_lossy().to_string())
        };
        for p in paths {
            let per_person = record_file(p).is_some()
                || p.is_dir()
                    && std::fs::read_dir(p)
                        .with_context(|| format!("{}: cannot read the folder", p.display()))?
                        .filter_map(|e| e.ok())
                        .any(|e| e.path().is_dir());
            if per_person {
                let d = Dataset::scan(p, false)?;
                skipped.extend(d.skipped);
                for s in d.samples {
                    add(d.people[s.label].clone(), s.path);
                }
            } else if p.is_dir() {
                for f in photos_in(std::slice::from_ref(p))? {
                    add(name_of(p), f);
                }
            } else {
                let folder = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                add(name_of(folder), p.clone());
            }
        }
        if people.is_empty() {
            bail!(
                "no photos to enroll in {}",
                paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        let root = paths.first().cloned().unwrap_or_default();
        Ok(Dataset { root, people, samples, skipped })
    }

    pub fn count(&self, label: usize) -> usize {
        self.samples.iter().filter(|s| s.label == label).count()
    }

    /// Keeps only the first `n` people (sorted by name); for small demos.
    pub fn first_people(mut self, n: usize) -> Dataset {
        if n < self.people.len() {
            self.people.truncate(n);
            self.samples.retain(|s| s.label < n);
        }
        self
    }
}
