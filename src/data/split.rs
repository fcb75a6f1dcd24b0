//! Stratified, seeded split: per person, 10% test, then 12% of the rest for
//! validation, the remainder for training. Every person with at least 3
//! images gets at least one image in each part. Saved with the run as CSV
//! (path, person, label, split) so that `eval` uses exactly the same test set.
//! The shuffle draws from ChaCha8, whose output is fixed by its definition,
//! so a seed gives the same split across dependency upgrades.

use super::csv_file;
use super::dataset::{Dataset, Sample};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
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

/// The split with `val_fraction` of what the test part leaves for
/// validation and `test_fraction` for the test part.
pub fn stratified(data: &Dataset, seed: u64, val_fraction: f64, test_fraction: f64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = Split::default();
    for label in 0..data.people.len() {
        let mut mine: Vec<Sample> = data.samples.iter().filter(|s| s.label == label).cloned().collect();
        mine.shuffle(&mut rng);
        let n = mine.len();
        let n_test = if test_fraction > 0.0 { take(n, test_fraction, n) } else { 0 };
        let n_val = take(n - n_test, val_fraction, n);
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
        let mut rows = vec![["path", "person", "label", "split"].map(String::from)];
        for (part, samples) in self.parts() {
            for s in samples {
                let (file, person) = (s.path.display().to_string(), people[s.label].clone());
                rows.push([file, person, s.label.to_string(), part.name().into()]);
            }
        }
        csv_file::write(path, &rows)
    }

    /// Reads a labels CSV written by `write_csv`.
    pub fn read_csv(path: &Path) -> Result<(Split, Vec<String>)> {
        let rows = csv_file::read(path).with_context(|| format!("{}: cannot read the split", path.display()))?;
        let mut split = Split::default();
        let mut people: Vec<String> = Vec::new();
        for (line, f) in rows.into_iter().skip(1) {
            let at = || format!("{}:{line}", path.display());
            if f.len() != 4 {
                bail!("{}: expected path,person,label,split", at());
            }
            let label: usize = f[2].parse().with_context(|| format!("{}: bad label `{}`", at(), &f[2]))?;
            if people.len() <= label {
                people.resize(label + 1, String::new());
            }
            people[label] = f[1].to_string();
            let s = Sample { path: PathBuf::from(&f[0]), label };
            match &f[3] {
                "train" => split.train.push(s),
                "val" => split.val.push(s),
                "test" => split.test.push(s),
                other => bail!("{}: unknown split `{other}`", at()),
            }
        }
        Ok((split, people))
    }
}
