//! Face verification metrics from scored pairs (cosine similarity, "same"
//! when score >= threshold): 10-fold accuracy with the threshold chosen on
//! the other nine folds, ROC AUC, equal error rate, and the true accept rate
//! at fixed false accept rates. Plus the ROC curve as a picture.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug)]
pub struct Pair {
    pub score: f64,
    pub same: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Metrics {
    pub pairs: usize,
    pub same: usize,
    pub different: usize,
    /// Mean and standard deviation over the folds.
    pub accuracy: f64,
    pub accuracy_std: f64,
    pub folds: usize,
    pub auc: f64,
    pub eer: f64,
    /// Threshold at the equal error rate.
    pub eer_threshold: f64,
    /// The threshold with the best accuracy on all the pairs: the one to
    /// verify with (`verify --threshold-from`).
    pub threshold: f64,
    pub tar_at_far_1e2: f64,
    pub tar_at_far_1e3: f64,
    /// Mean and standard deviation of the accuracy as insightface's
    /// `verification.py` reports it for its `.bin` sets
    /// (`verification_bin::fold_accuracy`).
    pub insightface_accuracy: f64,
    pub insightface_accuracy_std: f64,
}

/// Candidate thresholds: the lowest score (accept all), the midpoints
/// between consecutive distinct scores (so a threshold chosen on some pairs
/// sits between the classes, not on a score), and one above the largest
/// (accept nothing).
fn thresholds(pairs: &[Pair]) -> Vec<f64> {
    let mut s: Vec<f64> = pairs.iter().map(|p| p.score).collect();
    s.sort_by(f64::total_cmp);
    s.dedup();
    let mut t: Vec<f64> = s.first().copied().into_iter().collect();
    t.extend(s.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    t.push(s.last().map_or(0.0, |m| m + 1e-6));
    t
}

/// (true accept rate, false accept rate) at threshold t.
fn rates(pairs: &[Pair], t: f64) -> (f64, f64) {
    let (mut ta, mut fa, mut s, mut d) = (0usize, 0usize, 0usize, 0usize);
    for p in pairs {
        if p.same {
            s += 1;
            ta += (p.score >= t) as usize;
        } else {
            d += 1;
            fa += (p.score >= t) as usize;
        }
    }
    (ta as f64 / s.max(1) as f64, fa as f64 / d.max(1) as f64)
}

fn accuracy(pairs: &[Pair], t: f64) -> f64 {
    let right = pairs.iter().filter(|p| (p.score >= t) == p.same).count();
    right as f64 / pairs.len().max(1) as f64
}

/// The threshold with the best accuracy on `pairs` (the lowest on ties).
pub fn best_threshold(pairs: &[Pair]) -> f64 {
    let mut best = (f64::NEG_INFINITY, 0.0);
    for t in thresholds(pairs) {
        let a = accuracy(pairs, t);
        if a > best.0 {
            best = (a, t);
        }
    }
    best.1
}

/// Area under the ROC curve: the chance that a same pair outscores a
/// different one, ties counting half.
pub fn auc(pairs: &[Pair]) -> f64 {
    let (pos, neg): (Vec<&Pair>, Vec<&Pair>) = pairs.iter().partition(|p| p.same);
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut total = 0.0;
    for p in &pos {
        for n in &neg {
            total += if p.score > n.score {
                1.0
            } else if p.score == n.score {
                0.5
            } else {
                0.0
            };
        }
    }
    total / (pos.len() * neg.len()) as f64
}

/// The ROC points (false accept rate, true accept rate), from accepting
/// nothing to accepting everything.
pub fn roc(pairs: &[Pair]) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = thresholds(pairs)
        .into_iter()
        .rev()
        .map(|t| {
            let (tar, far) = rates(pairs, t);
            (far, tar)
        })
        .collect();
    pts.push((1.0, 1.0));
    pts
}

pub fn metrics(pairs: &[Pair]) -> Metrics {
    let same = pairs.iter().filter(|p| p.same).count();
    // Folds: every k-th pair, so each fold mixes same and different pairs.
    let k = 10.min(pairs.len()).max(1);
    let mut accs = Vec::new();
    for f in 0..k {
        let test: Vec<Pair> = pairs.iter().enumerate().filter(|(i, _)| i % k == f).map(|(_, p)| *p).collect();
        let train: Vec<Pair> = pairs.iter().enumerate().filter(|(i, _)| i % k != f).map(|(_, p)| *p).collect();
        let t = if train.is_empty() { best_threshold(&test) } else { best_threshold(&train) };
        accs.push(accuracy(&test, t));
    }
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64).sqrt();
    // EER: the threshold where false accepts and false rejects are closest.
    let mut eer = (f64::INFINITY, 1.0, 0.0);
    for t in thresholds(pairs) {
        let (tar, far) = rates(pairs, t);
        let frr = 1.0 - tar;
        if (far - frr).abs() < eer.0 {
            eer = ((far - frr).abs(), (far + frr) / 2.0, t);
        }
    }
    let scored: Vec<(f64, bool)> = pairs.iter().map(|p| (p.score, p.same)).collect();
    let insightface = crate::data::verification_bin::fold_accuracy(&scored);
    let tar_at = |target: f64| -> f64 {
        thresholds(pairs)
            .into_iter()
            .map(|t| rates(pairs, t))
            .filter(|&(_, far)| far <= target)
            .map(|(tar, _)| tar)
            .fold(0.0, f64::max)
    };
    Metrics {
        pairs: pairs.len(),
        same,
        different: pairs.len() - same,
        accuracy: mean,
        accuracy_std: std,
        folds: k,
        auc: auc(pairs),
        eer: eer.1,
        eer_threshold: eer.2,
        threshold: best_threshold(pairs),
        tar_at_far_1e2: tar_at(1e-2),
        tar_at_far_1e3: tar_at(1e-3),
        insightface_accuracy: insightface.0,
        insightface_accuracy_std: insightface.1,
    }
}

/// Pairs of photos from `path`: a CSV of `a,b,same` (same 1/0 or
/// true/false, an optional header), or LFW's `pairs.txt` (a first line of
/// counts, then `name i j` for a matched pair and `name i other j` for a
/// mismatched one, naming `name/name_000i.jpg`). Paths are relative to
/// `root`, by default the file's folder.
pub fn read_pairs(path: &Path, root: Option<&Path>) -> Result<Vec<(PathBuf, PathBuf, bool)>> {
    let base = root.unwrap_or(path.parent().unwrap_or(Path::new(".")));
    let text = crate::data::bounded::read_to_string(path, crate::data::bounded::Kind::Input)?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let lfw = !first.is_empty() && first.split_whitespace().all(|t| t.parse::<usize>().is_ok());
    let out = if lfw { lfw_pairs(path, &text, base)? } else { csv_pairs(path, base)? };
    if out.is_empty() {
        bail!("{}: no pairs", path.display());
    }
    Ok(out)
}

fn csv_pairs(path: &Path, base: &Path) -> Result<Vec<(PathBuf, PathBuf, bool)>> {
    let mut out = Vec::new();
    let rows = crate::data::csv_file::read(path)?;
    let header = rows.first().is_some_and(|(_, f)| f.get(2).is_some_and(|s| s.eq_ignore_ascii_case("same")));
    for (line, f) in rows.into_iter().skip(usize::from(header)) {
        let same = match f.get(2).map(|s| s.to_ascii_lowercase()) {
            Some(s) if s == "1" || s == "true" => true,
            Some(s) if s == "0" || s == "false" => false,
            _ => bail!(
                "{}:{line}: expected `a,b,same` with same 1/0, got {:?}",
                path.display(),
                f.iter().collect::<Vec<_>>()
            ),
        };
        out.push((base.join(&f[0]), base.join(&f[1]), same));
    }
    Ok(out)
}

fn lfw_pairs(path: &Path, text: &str, base: &Path) -> Result<Vec<(PathBuf, PathBuf, bool)>> {
    let photo = |name: &str, i: &str| -> Result<PathBuf> {
        let i: usize = i.parse().with_context(|| format!("{}: `{i}` is not an image number", path.display()))?;
        Ok(base.join(name).join(format!("{name}_{i:04}.jpg")))
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip_while(|(_, l)| l.trim().is_empty()).skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let at = || format!("{}:{}", path.display(), n + 1);
        match f.as_slice() {
            [] => {}
            [name, i, j] => out.push((photo(name, i).with_context(at)?, photo(name, j).with_context(at)?, true)),
            [a, i, b, j] => out.push((photo(a, i).with_context(at)?, photo(b, j).with_context(at)?, false)),
            _ => bail!("{}: expected `name i j` or `name i other j`, got `{line}`", at()),
        }
    }
    Ok(out)
}

/// Every pair of the photos of a per-person folder.
pub fn all_pairs(data: &crate::data::dataset::Dataset) -> Vec<(std::path::PathBuf, std::path::PathBuf, bool)> {
    let s = &data.samples;
    let mut out = Vec::new();
    for i in 0..s.len() {
        for j in i + 1..s.len() {
            out.push((s[i].path.clone(), s[j].path.clone(), s[i].label == s[j].label));
        }
    }
    out
}

/// A scored pair and its photos.
#[derive(Clone, Debug, Serialize)]
pub struct Scored {
    #[serde(skip)]
    pub pair: Pair,
    pub a: PathBuf,
    pub b: PathBuf,
    pub score: f64,
}

/// The pairs a threshold gets most wrong, worst first.
#[derive(Debug, Serialize)]
pub struct Worst {
    /// Different people scored at or above the threshold.
    pub false_accepts: Vec<Scored>,
    /// The same person scored below it.
    pub false_rejects: Vec<Scored>,
}

/// The `k` highest-scoring different pairs at or above `threshold`, and
/// the `k` lowest-scoring same pairs below it.
pub fn worst(scored: &[Scored], threshold: f64, k: usize) -> Worst {
    let mut fa: Vec<Scored> = scored.iter().filter(|s| !s.pair.same && s.score >= threshold).cloned().collect();
    fa.sort_by(|x, y| y.score.total_cmp(&x.score));
    let mut fr: Vec<Scored> = scored.iter().filter(|s| s.pair.same && s.score < threshold).cloned().collect();
    fr.sort_by(|x, y| x.score.total_cmp(&y.score));
    fa.truncate(k);
    fr.truncate(k);
    Worst { false_accepts: fa, false_rejects: fr }
}

/// Embeds each distinct photo once and scores the pairs; pairs with a photo
/// that failed are left out and returned with the reason.
pub fn score_pairs(
    r: &mut super::photo::Recognizer,
    pairs: &[(std::path::PathBuf, std::path::PathBuf, bool)],
) -> anyhow::Result<(Vec<Scored>, Vec<(std::path::PathBuf, String)>)> {
    let mut files: Vec<std::path::PathBuf> = pairs.iter().flat_map(|(a, b, _)| [a.clone(), b.clone()]).collect();
    files.sort();
    files.dedup();
    let results = r.embed_files(&files)?;
    let mut emb = std::collections::HashMap::new();
    let mut failed = Vec::new();
    for r in results {
        match (r.result, r.error) {
            (Some(e), _) => {
                emb.insert(r.path, e);
            }
            (None, e) => failed.push((r.path, e.unwrap_or_default())),
        }
    }
    let scored = pairs
        .iter()
        .filter_map(|(a, b, same)| {
            let score = super::embedding::dot(emb.get(a)?, emb.get(b)?);
            Some(Scored { pair: Pair { score, same: *same }, a: a.clone(), b: b.clone(), score })
        })
        .collect();
    Ok((scored, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(f64, bool)]) -> Vec<Pair> {
        v.iter().map(|&(score, same)| Pair { score, same }).collect()
    }

    #[test]
    fn perfect_separation() {
        let p = pairs(&[(0.9, true), (0.8, true), (0.7, true), (0.2, false), (0.1, false), (0.3, false)]);
        let m = metrics(&p);
        assert_eq!((m.auc, m.eer, m.accuracy, m.tar_at_far_1e2, m.tar_at_far_1e3), (1.0, 0.0, 1.0, 1.0, 1.0));
        assert!(m.eer_threshold > 0.3 && m.eer_threshold <= 0.7);
        assert_eq!(roc(&p).first(), Some(&(0.0, 0.0)));
        assert_eq!(roc(&p).last(), Some(&(1.0, 1.0)));
    }

    #[test]
    fn all_ties() {
        let p = pairs(&[(0.5, true), (0.5, false), (0.5, true), (0.5, false)]);
        let m = metrics(&p);
        assert_eq!(m.auc, 0.5);
        // One threshold accepts all (FAR 1, FRR 0), the other none (FAR 0, FRR 1): EER 0.5.
        assert_eq!(m.eer, 0.5);
        assert_eq!(m.tar_at_far_1e2, 0.0, "nothing is accepted at FAR 1%");
        // Any threshold gets half the pairs right; held-out folds can do worse
        // (each fold's threshold is chosen by the majority of the other three).
        assert_eq!(accuracy(&p, best_threshold(&p)), 0.5);
        assert!(m.accuracy <= 0.5);
    }

    #[test]
    fn one_error() {
        // One different pair (0.85) outscores two of the four same pairs.
        let p = pairs(&[
            (0.95, true),
            (0.9, true),
            (0.8, true),
            (0.7, true),
            (0.85, false),
            (0.3, false),
            (0.2, false),
            (0.1, false),
        ]);
        let m = metrics(&p);
        // 16 (same, different) comparisons, 2 lost: AUC 14/16.
        assert_eq!(m.auc, 14.0 / 16.0);
        // Threshold 0.9: TAR 2/4, FAR 0 -> TAR at FAR 1e-2 is 0.5.
        assert_eq!(m.tar_at_far_1e2, 0.5);
        // Threshold 0.8: FAR 1/4, FRR 1/4 -> EER 0.25.
        assert_eq!(m.eer, 0.25);
        assert_eq!(best_threshold(&p), 0.5, "accepting from between 0.3 and 0.7 gets 7 of 8 right");
    }

    #[test]
    fn pairs_from_lfw_pairs_txt_and_from_csv() {
        let d = std::env::temp_dir().join(format!("arcface-pairs-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let lfw = d.join("pairs.txt");
        std::fs::write(&lfw, "1\t2\nAaron_Peirsol\t1\t2\nAJ_Cook\t1\tMarsha_Thomason\t1\n").unwrap();
        let p = read_pairs(&lfw, Some(Path::new("/lfw"))).unwrap();
        assert_eq!(p.len(), 2);
        let want = Path::new("/lfw/Aaron_Peirsol/Aaron_Peirsol_0002.jpg");
        assert!(p[0].1 == want && p[0].2, "{p:?}");
        assert!(p[1].0.ends_with("AJ_Cook/AJ_Cook_0001.jpg") && !p[1].2, "{p:?}");
        std::fs::write(&lfw, "1 1\nAaron_Peirsol 1\n").unwrap();
        let err = format!("{:#}", read_pairs(&lfw, None).unwrap_err());
        assert!(err.contains("pairs.txt:2") && err.contains("name i j"), "{err}");

        let csv = d.join("pairs.csv");
        std::fs::write(&csv, "a,b,same\n\"x, 1.png\",y.png,1\nx.png,z.png,false\n").unwrap();
        let p = read_pairs(&csv, None).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].0 == d.join("x, 1.png") && p[0].2 && !p[1].2, "{p:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
