//! Stratified, seeded split: per person, 10% test, then 12% of the rest for
//! validation, the remainder for training. Every person with at least 3
//! images gets at least one image in each part. Saved with the run as CSV
//! (path, person, label, split) so that `eval` uses exactly the same test set.

use super::dataset::{Dataset, Sample};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};
use std::path::{Path, PathBuf};

pub const TEST_FRACTION: f64 = 0.10;
pub const VAL_FRACTION: f64 = 0.12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Split {
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    pub test: Vec<Sample>,
}

/// How many of `n` go to a part of `fraction`, at least one when `n >= 3`.
fn take(n: usize, fraction: f64, min_total: usize) -> usize {
    let k = (n as f64 * fraction).round() as usize;
    if min_total >= 3 {
        k.max(1)
    } else {
        k
    }
}

pub fn stratified(data: &Dataset, seed: u64) -> Split {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut split = Split::default();
    for label in 0..data.people.len() {
        let mut mine: Vec<Sample> = data.samples.iter().filter(|s| s.label == label).cloned().collect();
        mine.shuffle(&mut rng);
        let n = mine.len();
        let n_test = take(n, TEST_FRACTION, n);
        let n_val = take(n - n_test, VAL_FRACTION, n);
        let rest = mine.split_off(n_test);
        split.test.extend(mine);
        let mut rest = rest;
        let train = rest.split_off(n_val);
        split.val.extend(rest);
        split.train.extend(train);
    }
    split
}

impl Split {
    pub fn parts(&self) -> [(Part, &Vec<Sample>); 3] {
        [(Part::Train, &self.train), (Part::Val, &self.val), (Part::Test, &self.test)]
    }

    /// The labels CSV: path, person, label index, split.
    pub fn write_csv(&self, path: &Path, people: &[String]) -> Result<()> {
        let mut out = String::from("path,person,label,split\n");
        for (part, samples) in self.parts() {
            for s in samples {
                let p = s.path.display().to_string();
                if p.contains(',') || p.contains('"') || p.contains('\n') {
                    out.push_str(&format!("\"{}\"", p.replace('"', "\"\"")));
                } else {
                    out.push_str(&p);
                }
                out.push_str(&format!(",{},{},{}\n", people[s.label], s.label, part.name()));
            }
        }
        let tmp = path.with_extension("csv.tmp");
        std::fs::write(&tmp, out).with_context(|| format!("{}: cannot write", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(())
    }

    /// Reads a labels CSV written by `write_csv`.
    pub fn read_csv(path: &Path) -> Result<(Split, Vec<String>)> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the split", path.display()))?;
        let mut split = Split::default();
        let mut people: Vec<String> = Vec::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let (file, rest) = if let Some(stripped) = line.strip_prefix('"') {
                let end = stripped.find("\",").with_context(|| format!("{}:{}: bad quoting", path.display(), i + 1))?;
                (stripped[..end].replace("\"\"", "\""), &stripped[end + 2..])
            } else {
                let at = line.find(',').with_context(|| format!("{}:{}: too few fields", path.display(), i + 1))?;
                (line[..at].to_string(), &line[at + 1..])
            };
            let f: Vec<&str> = rest.split(',').collect();
            if f.len() != 3 {
                bail!("{}:{}: expected path,person,label,split", path.display(), i + 1);
            }
            let label: usize =
                f[1].parse().with_context(|| format!("{}:{}: bad label `{}`", path.display(), i + 1, f[1]))?;
            if people.len() <= label {
                people.resize(label + 1, String::new());
            }
            people[label] = f[0].to_string();
            let s = Sample { path: PathBuf::from(file), label };
            match f[2] {
                "train" => split.train.push(s),
                "val" => split.val.push(s),
                "test" => split.test.push(s),
                other => bail!("{}:{}: unknown split `{other}`", path.display(), i + 1),
            }
        }
        Ok((split, people))
    }
}
