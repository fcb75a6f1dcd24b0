//! MTCNN face detection (Zhang et al. 2016): an image pyramid through P-Net,
//! candidate boxes refined by R-Net and O-Net, which also places five
//! landmarks. The networks run on the engine (`nets`); the box arithmetic is
//! on the CPU (`boxes`). The cascade follows facenet-pytorch 2.6's
//! `detect_face`, whose outputs are the reference this is tested against.
//! `align` warps a detected face onto the 112x112 template and `prepare`
//! turns a folder of photos into aligned crops.

pub mod align;
pub mod bench;
pub mod boxes;
pub mod detector;
pub mod draw;
pub mod nets;
pub mod prepare;

use crate::kernels::resample::Rect;
use crate::nn::Backend;
use anyhow::Result;
use boxes::{crop_region, nms, regress, regress_first, square, Candidate, Overlap};
pub use detector::Detector;
pub use nets::{Nets, Photo};
use serde::Serialize;

/// Detection settings (the usual MTCNN ones by default).
#[derive(Clone, Debug)]
pub struct Options {
    /// Smallest face side in pixels: the pyramid's first scale is 12 / min_face.
    pub min_face: f64,
    /// Ratio between pyramid levels.
    pub factor: f64,
    /// Face-probability thresholds of P-, R- and O-Net.
    pub thresholds: [f32; 3],
}

impl Default for Options {
    fn default() -> Self {
        Options { min_face: 20.0, factor: 0.709, thresholds: [0.6, 0.7, 0.7] }
    }
}

impl Options {
    pub fn validate(&self) -> Result<()> {
        if !(self.min_face >= 12.0) {
            anyhow::bail!("--min-face must be >= 12 pixels (P-Net's window), got {}", self.min_face);
        }
        if !(self.factor > 0.1 && self.factor < 1.0) {
            anyhow::bail!("--factor must be in (0.1, 1), got {}", self.factor);
        }
        if self.thresholds.iter().any(|t| !(0.0..=1.0).contains(t)) {
            anyhow::bail!("thresholds must be in [0, 1], got {:?}", self.thresholds);
        }
        Ok(())
    }
}

/// One detected face: box [x1, y1, x2, y2] in pixels, O-Net's probability,
/// and the landmarks left eye, right eye, nose, left and right mouth corner
/// (left and right as seen in the image).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Face {
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub prob: f32,
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1])
    }

    /// The same face in an image `factor` times as large.
    pub fn scaled(&self, factor: f32) -> Face {
        Face {
            bbox: self.bbox.map(|v| v * factor),
            prob: self.prob,
            landmarks: self.landmarks.map(|[x, y]| [x * factor, y * factor]),
        }
    }
}

/// The most candidates R-Net and O-Net refine (the highest P-Net or R-Net
/// scores): photos of faces leave far fewer, while noise or a damaged
/// photo can leave tens of thousands, each a crop through a network. The
/// bound keeps what one photo costs the GPU bounded.
pub const MAX_REFINED: usize = 1000;

/// The `most` highest-scoring of `cands`, in their order (all of them when
/// there are no more).
fn best_of(cands: Vec<Candidate>, most: usize) -> Vec<Candidate> {
    if cands.len() <= most {
        return cands;
    }
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by(|&a, &b| cands[b].score.total_cmp(&cands[a].score));
    let mut keep = vec![false; cands.len()];
    order.into_iter().take(most).for_each(|i| keep[i] = true);
    cands.into_iter().zip(keep).filter(|(_, k)| *k).map(|(c, _)| c).collect()
}

/// The pyramid's scales for an image whose shorter side is `min_side`.
pub fn scales(min_side: usize, opt: &Options) -> Vec<f64> {
    let m = 12.0 / opt.min_face;
    let mut minl = min_side as f64 * m;
    let mut s = m;
    let mut out = Vec::new();
    while minl >= 12.0 {
        out.push(s);
        s *= opt.factor;
        minl *= opt.factor;
    }
    out
}

/// The photo's rectangle under each box (clipped to the photo, as the
/// reference does) for R-Net or O-Net; boxes with nothing inside the photo
/// are dropped from `boxes`.
fn crop_rects(boxes: &mut Vec<Candidate>, h: usize, w: usize) -> Vec<Rect> {
    let mut rects = Vec::with_capacity(boxes.len());
    boxes.retain(|c| {
        let Some((y0, y1, x0, x1)) = crop_region(&c.b, w, h) else { return false };
        rects.push(Rect { y0, y1, x0, x1 });
        true
    });
    rects
}

/// The stages of one detection, in order: the photo uploaded, then each
/// network (its inputs resampled from the photo on the device) with the box
/// arithmetic after it (`bench detect` times each).
pub const STAGES: [&str; 4] = ["upload", "p-net", "r-net", "o-net"];

/// All faces in an RGB image, largest box first.
pub async fn detect<B: Backend>(b: &mut B, nets: &Nets<B>, rgb: &image::RgbImage, opt: &Options) -> Result<Vec<Face>> {
    detect_marked(b, nets, rgb, opt, &mut |_| {}).await
}

/// `detect`, calling `mark(i)` as stage `STAGES[i]` ends (a photo where a
/// stage leaves no candidates ends there).
pub async fn detect_marked<B: Backend>(
    b: &mut B,
    nets: &Nets<B>,
    rgb: &image::RgbImage,
    opt: &Options,
    mark: &mut dyn FnMut(usize),
) -> Result<Vec<Face>> {
    opt.validate()?;
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let sizes: Vec<(f64, usize, usize)> = scales(h.min(w), opt)
        .into_iter()
        .map(|scale| (scale, (h as f64 * scale + 1.0) as usize, (w as f64 * scale + 1.0) as usize))
        .filter(|&(_, sh, sw)| sh >= 12 && sw >= 12)
        .collect();
    if sizes.is_empty() {
        return Ok(Vec::new());
    }
    let photo = Photo::from_rgb(b, rgb)?;
    mark(0);

    // Stage 1: P-Net over the pyramid (every level in one submission, one
    // read-back), NMS 0.5 per scale, 0.7 across scales.
    let levels: Vec<(usize, usize)> = sizes.iter().map(|&(_, sh, sw)| (sh, sw)).collect();
    let mut cands: Vec<Candidate> = Vec::new();
    for ((scale, ..), maps) in sizes.iter().zip(nets.pnet_pyramid(b, &photo, &levels).await?) {
        let found = boxes::generate(&maps.prob, &maps.reg, maps.h, maps.w, *scale as f32, opt.thresholds[0]);
        cands.extend(nms(&found, 0.5, Overlap::Union).into_iter().map(|i| found[i]));
    }
    let keep = nms(&cands, 0.7, Overlap::Union);
    let cands: Vec<Candidate> =
        keep.into_iter().map(|i| Candidate { b: square(&regress_first(&cands[i])), ..cands[i] }).collect();
    let mut cands = best_of(cands, MAX_REFINED);
    mark(1);
    if cands.is_empty() {
        return Ok(Vec::new());
    }

    // Stage 2: R-Net on 24x24 crops, threshold, NMS 0.7, regression, square.
    let rects = crop_rects(&mut cands, h, w);
    let r = nets.rnet(b, &photo, &rects).await?;
    let passed: Vec<Candidate> = cands
        .iter()
        .zip(r.prob.iter().zip(&r.reg))
        .filter(|(_, (&p, _))| p > opt.thresholds[1])
        .map(|(c, (&p, &reg))| Candidate { b: c.b, score: p, reg })
        .collect();
    let cands: Vec<Candidate> = nms(&passed, 0.7, Overlap::Union)
        .into_iter()
        .map(|i| Candidate { b: square(&regress(&passed[i].b, &passed[i].reg)), ..passed[i] })
        .collect();
    let mut cands = best_of(cands, MAX_REFINED);
    mark(2);
    if cands.is_empty() {
        return Ok(Vec::new());
    }

    // Stage 3: O-Net on 48x48 crops: threshold, landmarks, regression, "Min" NMS.
    let rects = crop_rects(&mut cands, h, w);
    let o = nets.onet(b, &photo, &rects).await?;
    let mut faces = Vec::new();
    let mut finals = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        if o.prob[i] <= opt.thresholds[2] {
            continue;
        }
        let (bw, bh) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
        let p = &o.landmarks[i];
        let landmarks = std::array::from_fn(|k| [bw * p[k] + c.b[0] - 1.0, bh * p[k + 5] + c.b[1] - 1.0]);
        let bbox = regress(&c.b, &o.reg[i]);
        faces.push(Face { bbox, prob: o.prob[i], landmarks });
        finals.push(Candidate { b: bbox, score: o.prob[i], reg: [0.0; 4] });
    }
    let mut faces: Vec<Face> = nms(&finals, 0.7, Overlap::Min).into_iter().map(|i| faces[i].clone()).collect();
    faces.sort_by(|a, b| b.area().total_cmp(&a.area()));
    mark(3);
    Ok(faces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refinement_keeps_the_best_scoring_candidates_in_their_order() {
        let c = |score: f32| Candidate { b: [score; 4], score, reg: [0.0; 4] };
        let cands = vec![c(0.2), c(0.9), c(0.5), c(0.7)];
        let kept: Vec<f32> = best_of(cands.clone(), 2).iter().map(|c| c.score).collect();
        assert_eq!(kept, [0.9, 0.7]);
        assert_eq!(best_of(cands, 4).len(), 4, "no more than the bound: all, as they were");
    }
}
