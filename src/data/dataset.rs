//! A dataset folder: one sub-folder per person, image files inside. Files
//! that cannot be decoded are listed with the reason and skipped, never a
//! crash; people are labelled in name order, numbers by value (s2 < s10).

use super::input;
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

impl Dataset {
    /// Scans `root`. With `decode`, every image is decoded once so that
    /// broken files are found now rather than in the middle of training.
    pub fn scan(root: &Path, decode: bool) -> Result<Dataset> {
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
            for f in files {
                if !is_image_name(&f) {
                    skipped.push(Skipped {
                        path: f,
                        reason: format!("not an image file name ({})", EXTENSIONS.join(", ")),
                    });
                    continue;
                }
                if decode {
                    if let Err(e) = input::open_rgb(&f) {
                        skipped.push(Skipped { path: f, reason: format!("{:#}", e.root_cause()) });
                        continue;
                    }
                }
                samples.push(Sample { path: f, label });
                count += 1;
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

    /// People from command-line paths: a folder of per-person folders (as
    /// `scan`), a folder of one person's photos (named by the folder), or
    /// photo files (each named by its folder). The same name in several
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
            let per_person = p.is_dir()
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
