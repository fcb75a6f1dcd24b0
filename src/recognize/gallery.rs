//! Open-set identification: `enroll` stores each person's mean normalised
//! embedding (and how many photos made it); `identify` names the closest
//! person by cosine similarity, or answers "unknown" below the gallery's
//! threshold. Adding a person is enrolling again; nothing is retrained.
//!
//! The threshold is calibrated at enrolment on impostor scores: every
//! gallery photo against every other person's mean. It is the score that
//! only 1% of those exceed (a false accept rate of about 1% per comparison),
//! or with fewer than 100 such scores, their maximum.

use super::answer::Answer;
use super::embedding::{dot, normalise};
use super::session::Prediction;
use crate::data::dataset::Dataset;
use crate::data::input::Framing;
use crate::data::FileResult;
use crate::io::tensorfile::{write_atomic, Loaded, TensorFile};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const KEY: &str = "arcface_gallery";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GalleryMeta {
    pub people: Vec<String>,
    pub counts: Vec<usize>,
    pub threshold: f64,
    /// The checkpoint the embeddings came from; identify must use the same.
    pub checkpoint: String,
    /// `fingerprint` of that checkpoint's file (absent in galleries enrolled
    /// before it was recorded: those are not checked).
    #[serde(default)]
    pub checkpoint_fingerprint: Option<String>,
    pub align: bool,
    pub flip: bool,
}

pub struct Gallery {
    pub meta: GalleryMeta,
    /// One unit vector per person.
    pub means: Vec<Vec<f32>>,
}

#[derive(Debug, Serialize)]
pub struct Match {
    pub person: String,
    pub score: f64,
}

#[derive(Debug, Serialize)]
pub struct Identity {
    /// The closest person, or "unknown" below the threshold.
    pub answer: String,
    pub best: Match,
    pub top: Vec<Match>,
}

/// A checkpoint file's FNV-1a 64 hash, in hex: stable across builds and
/// platforms (std's hasher is not).
pub fn fingerprint(checkpoint: &Path) -> Result<String> {
    let bytes = crate::data::bounded::read(checkpoint, crate::data::bounded::Kind::Model)?;
    Ok(fingerprint_bytes(&bytes))
}

/// `fingerprint` of bytes in memory.
pub fn fingerprint_bytes(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

use crate::io::checkpoint::impostor_threshold;

impl Gallery {
    /// Embeds every photo of `dir` (one folder per person).
    /// A gallery from the embeddings of `data`'s photos (in its order; the
    /// photos that failed are returned with why), made with `checkpoint`
    /// shown photos as `framing`, with or without the mirrored image.
    pub fn enroll(
        data: &Dataset,
        results: Vec<FileResult<Vec<f32>>>,
        checkpoint: &Path,
        framing: Framing,
        flip: bool,
    ) -> Result<(Gallery, Vec<(PathBuf, String)>)> {
        let mut sums = vec![vec![0f32; 0]; data.people.len()];
        let mut counts = vec![0usize; data.people.len()];
        let mut per_photo = Vec::new();
        let mut failed = Vec::new();
        for (sample, r) in data.samples.iter().zip(results) {
            match (r.result, r.error) {
                (Some(e), _) => {
                    let acc = &mut sums[sample.label];
                    if acc.is_empty() {
                        acc.resize(e.len(), 0.0);
                    }
                    acc.iter_mut().zip(&e).for_each(|(a, b)| *a += b);
                    counts[sample.label] += 1;
                    per_photo.push((sample.label, e));
                }
                (None, err) => failed.push((sample.path.clone(), err.unwrap_or_default())),
            }
        }
        let keep: Vec<usize> = (0..data.people.len()).filter(|&i| counts[i] > 0).collect();
        if keep.is_empty() {
            bail!("{}: no face could be embedded", data.root.display());
        }
        let means: Vec<Vec<f32>> = keep
            .iter()
            .map(|&i| {
                let mut m = sums[i].clone();
                normalise(&mut m);
                m
            })
            .collect();
        let index: HashMap<usize, usize> = keep.iter().enumerate().map(|(j, &i)| (i, j)).collect();
        let mut impostor = Vec::new();
        for (label, e) in &per_photo {
            for (j, m) in means.iter().enumerate() {
                if index[label] != j {
                    impostor.push(dot(e, m));
                }
            }
        }
        let meta = GalleryMeta {
            people: keep.iter().map(|&i| data.people[i].clone()).collect(),
            counts: keep.iter().map(|&i| counts[i]).collect(),
            threshold: impostor_threshold(impostor, 0.01),
            // Absolute, so that `identify` finds it from anywhere.
            checkpoint: std::fs::canonicalize(checkpoint).unwrap_or(checkpoint.to_path_buf()).display().to_string(),
            checkpoint_fingerprint: Some(fingerprint(checkpoint)?),
            align: framing == Framing::AlignedFace,
            flip,
        };
        Ok((Gallery { meta, means }, failed))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let d = self.means.first().map_or(0, |m| m.len());
        let tensors = BTreeMap::from([(
            "means".to_string(),
            Loaded { shape: vec![self.means.len(), d], values: self.means.concat() },
        )]);
        let meta = HashMap::from([(KEY.to_string(), serde_json::to_string(&self.meta)?)]);
        write_atomic(path, &tensors, meta)
    }

    pub fn load(path: &Path) -> Result<Gallery> {
        Gallery::from_file(path, TensorFile::read(path)?)
    }

    /// A gallery file's bytes (the browser fetches them); errors name
    /// `origin`.
    pub fn parse(origin: &Path, bytes: &[u8]) -> Result<Gallery> {
        let f =
            TensorFile::parse(bytes).with_context(|| format!("{}: not a valid safetensors file", origin.display()))?;
        Gallery::from_file(origin, f)
    }

    fn from_file(path: &Path, f: TensorFile) -> Result<Gallery> {
        let meta: GalleryMeta = serde_json::from_str(
            f.metadata
                .get(KEY)
                .with_context(|| format!("{}: not a gallery (made by `arcface enroll`)", path.display()))?,
        )?;
        let t = f.get("means")?;
        let means: Vec<Vec<f32>> = t.values.chunks(t.shape[1].max(1)).map(<[f32]>::to_vec).collect();
        if means.len() != meta.people.len() {
            bail!("{}: {} embeddings for {} people", path.display(), means.len(), meta.people.len());
        }
        Ok(Gallery { meta, means })
    }

    /// The checkpoint the gallery (read from `path`) was enrolled with:
    /// where it was then, or beside the gallery.
    pub fn enrolled_checkpoint(&self, path: &Path) -> Result<PathBuf> {
        let recorded = PathBuf::from(&self.meta.checkpoint);
        let beside = path.parent().unwrap_or(Path::new(".")).join(recorded.file_name().unwrap_or_default());
        [recorded, beside].into_iter().find(|p| p.is_file()).with_context(|| {
            format!(
                "{}: enrolled with {}, which is not there any more: give --checkpoint",
                path.display(),
                self.meta.checkpoint
            )
        })
    }

    /// Refuses a checkpoint other than the one the gallery (read from
    /// `path`) was enrolled with: its embeddings live in another space, so
    /// the scores would mean nothing.
    pub fn check_checkpoint(&self, path: &Path, checkpoint: &Path) -> Result<()> {
        let Some(enrolled) = &self.meta.checkpoint_fingerprint else {
            return Ok(());
        };
        if fingerprint(checkpoint)? != *enrolled {
            bail!(
                "{}: enrolled with checkpoint {}, and {} is another (its file differs): enroll again with it, \
                 or identify with the one enrolled",
                path.display(),
                self.meta.checkpoint,
                checkpoint.display()
            );
        }
        Ok(())
    }

    /// What the gallery shows a photo as: aligned faces unless enrolled on
    /// whole photos.
    pub fn framing(&self) -> Framing {
        if self.meta.align {
            Framing::AlignedFace
        } else {
            Framing::WholePhoto
        }
    }

    /// `identify` as the answer every path gives.
    pub fn answer(&self, e: &[f32], top: usize) -> Answer {
        let id = self.identify(e, top);
        let top = id
            .top
            .iter()
            .map(|m| Prediction { person: m.person.clone(), probability: None, cosine: Some(m.score as f32) })
            .collect();
        Answer { person: id.answer, threshold: Some(self.meta.threshold), top }
    }

    pub fn identify(&self, e: &[f32], top: usize) -> Identity {
        let mut scores: Vec<Match> = self
            .meta
            .people
            .iter()
            .zip(&self.means)
            .map(|(p, m)| Match { person: p.clone(), score: dot(e, m) })
            .collect();
        scores.sort_by(|a, b| b.score.total_cmp(&a.score));
        let best = Match { person: scores[0].person.clone(), score: scores[0].score };
        let answer = if best.score >= self.meta.threshold { best.person.clone() } else { "unknown".into() };
        scores.truncate(top.max(1));
        Identity { answer, best, top: scores }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_takes_the_far_quantile() {
        let scores: Vec<f64> = (0..200).map(|i| i as f64 / 200.0).collect();
        // 1% of 200 = 2 scores above: sorted index 198.
        assert_eq!(impostor_threshold(scores, 0.01), 198.0 / 200.0);
        assert_eq!(impostor_threshold(vec![0.1, 0.4, 0.2], 0.01), 0.4, "few scores: the maximum");
    }

    #[test]
    fn identify_finds_the_known_and_rejects_the_stranger() {
        let mut a = vec![1.0, 0.1, 0.0];
        let mut b = vec![0.0, 1.0, 0.2];
        normalise(&mut a);
        normalise(&mut b);
        let g = Gallery {
            meta: GalleryMeta {
                people: vec!["ann".into(), "bob".into()],
                counts: vec![2, 1],
                threshold: 0.6,
                checkpoint: String::new(),
                checkpoint_fingerprint: None,
                align: false,
                flip: true,
            },
            means: vec![a.clone(), b],
        };
        let known = g.identify(&a, 5);
        assert_eq!((known.answer.as_str(), known.top.len()), ("ann", 2));
        let stranger = g.identify(&[0.0, 0.0, 1.0], 1);
        assert_eq!(stranger.answer, "unknown");
        assert_eq!(stranger.best.person, "bob", "the closest is still reported");
    }
}
