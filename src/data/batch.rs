//! Model inputs gathered into one batch: (N, 3, size, size) in NCHW order,
//! with a label per image. Training, evaluation, inference and the training
//! benchmark all build their batches here.

use super::dataset::Sample;
use super::input::{load_input, Normalization};
use anyhow::Result;

#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Input height = width.
    pub size: usize,
    /// N * 3 * size * size values.
    pub x: Vec<f32>,
    pub labels: Vec<u32>,
}

impl Batch {
    pub fn new(size: usize, capacity: usize) -> Batch {
        Batch { size, x: Vec::with_capacity(capacity * 3 * size * size), labels: Vec::with_capacity(capacity) }
    }

    /// Adds one (3, size, size) input.
    pub fn push(&mut self, input: &[f32], label: u32) {
        assert_eq!(input.len(), 3 * self.size * self.size, "an input of the wrong size for this batch");
        self.x.extend_from_slice(input);
        self.labels.push(label);
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// (N, 3, size, size).
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 3, self.size, self.size]
    }

    /// Evaluation inputs (resize + normalise) of samples read from their
    /// files, labelled with the samples' labels.
    pub fn load(samples: &[Sample], size: usize, norm: &Normalization) -> Result<Batch> {
        let mut b = Batch::new(size, samples.len());
        for s in samples {
            b.push(&load_input(&s.path, size, norm)?, s.label as u32);
        }
        Ok(b)
    }

    /// A fixed, deterministic batch (values in [-1, 1), labels cycling over
    /// `classes`): throughput measurements that need no images.
    pub fn synthetic(n: usize, size: usize, classes: usize) -> Batch {
        let per = 3 * size * size;
        let mut b = Batch::new(size, n);
        for i in 0..n {
            let x: Vec<f32> = (i * per..(i + 1) * per).map(|j| ((j * 7919) % 255) as f32 / 128.0 - 1.0).collect();
            b.push(&x, (i % classes.max(1)) as u32);
        }
        b
    }
}
