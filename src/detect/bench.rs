//! `arcface bench detect`: wall time of face detection at several photo sizes.

use super::{Detector, Options, STAGES};
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
    /// Median wall time of each stage (`detect::STAGES`), in order.
    pub stages: Vec<StageTime>,
    /// What the last timed call asked of the device (warm: the pool and
    /// the bind-group cache filled by the calls before).
    pub per_call: Counts,
}

#[derive(Debug, Serialize)]
pub struct StageTime {
    pub stage: &'static str,
    pub seconds: f64,
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
        let mut stage_times = vec![Vec::new(); STAGES.len()];
        let mut faces = 0;
        let mut per_call = Counts::default();
        for i in 0..=repeats.max(1) {
            let start = Instant::now();
            let mut ends = vec![None; STAGES.len()];
            let mut mark = |stage: usize| ends[stage] = Some(start.elapsed().as_secs_f64());
            let (found, counts) = gpu.counters.during(|| pollster::block_on(d.detect_marked(&img, &mut mark)));
            faces = found?.len();
            if i > 0 {
                times.push(start.elapsed().as_secs_f64());
                per_call = counts;
                let mut previous = 0.0;
                for (t, end) in stage_times.iter_mut().zip(ends) {
                    let end = end.unwrap_or(previous);
                    t.push(end - previous);
                    previous = end;
                }
            }
        }
        times.sort_by(f64::total_cmp);
        let stages = STAGES
            .iter()
            .zip(&mut stage_times)
            .map(|(stage, t)| {
                t.sort_by(f64::total_cmp);
                StageTime { stage, seconds: t[t.len() / 2] }
            })
            .collect();
        out.push(DetectTime {
            adapter: gpu.info.name.clone(),
            width: s,
            height: s,
            faces,
            seconds: times[times.len() / 2],
            stages,
            per_call,
        });
    }
    Ok(out)
}
