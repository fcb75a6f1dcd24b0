//! `arcface bench detect`: wall time of face detection at several photo sizes.

use super::{Detector, Options};
use crate::data::input::open_rgb;
use crate::gpu::{Counts, Gpu};
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct DetectTime {
    pub adapter: String,
    pub width: u32,
    pub height: u32,
    pub faces: usize,
    /// Median wall time of one `detect` call (pyramid, three networks, NMS).
    pub seconds: f64,
    /// What the last timed call asked of the device (warm: the pool and
    /// the bind-group cache filled by the calls before).
    pub per_call: Counts,
}

/// Wall time of MTCNN on a London photo at its size (300x300) and scaled up
/// to each of `sizes`, default settings; median over `repeats` after a warm-up.
pub fn detect_times(gpu: &Gpu, sizes: &[u32], repeats: usize) -> Result<Vec<DetectTime>> {
    let photo = open_rgb(&crate::data::bundled("london/001/neutral.jpg")?)?;
    let mut d = Detector::open(gpu, None, Options::default())?;
    let mut out = Vec::new();
    for &s in sizes {
        let img = if s == photo.width() {
            photo.clone()
        } else {
            image::imageops::resize(&photo, s, s, image::imageops::FilterType::Triangle)
        };
        let mut times = Vec::new();
        let mut faces = 0;
        let mut per_call = Counts::default();
        for i in 0..=repeats.max(1) {
            let start = Instant::now();
            let (found, counts) = gpu.counters.during(|| d.detect(&img));
            faces = found?.len();
            if i > 0 {
                times.push(start.elapsed().as_secs_f64());
                per_call = counts;
            }
        }
        times.sort_by(f64::total_cmp);
        out.push(DetectTime {
            adapter: gpu.info.name.clone(),
            width: s,
            height: s,
            faces,
            seconds: times[times.len() / 2],
            per_call,
        });
    }
    Ok(out)
}
