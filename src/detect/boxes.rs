//! Box arithmetic of MTCNN's cascade, on the CPU (a few hundred boxes):
//! candidate generation from P-Net's maps, non-maximum suppression,
//! regression, squaring and clipping. Conventions follow facenet-pytorch,
//! whose detector the weights and the reference outputs come from, including
//! its two pixel conventions: IoU NMS and the first-stage regression use
//! `x2 - x1`, the later regressions and the "Min" NMS use `x2 - x1 + 1`.

/// A box [x1, y1, x2, y2] in image pixels, its score and the regression
/// offsets the network predicted for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub b: [f32; 4],
    pub score: f32,
    pub reg: [f32; 4],
}

/// P-Net's 12x12 window at stride 2: one candidate per output cell whose face
/// probability is >= `threshold`, in row-major order. `prob` and `reg` are
/// the (h, w) probability map and the (4, h, w) offset maps of one image.
pub fn generate(prob: &[f32], reg: &[f32], h: usize, w: usize, scale: f32, threshold: f32) -> Vec<Candidate> {
    const STRIDE: f32 = 2.0;
    const CELL: f32 = 12.0;
    let mut out = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if prob[i] >= threshold {
                let (fx, fy) = (x as f32, y as f32);
                out.push(Candidate {
                    b: [
                        ((STRIDE * fx + 1.0) / scale).floor(),
                        ((STRIDE * fy + 1.0) / scale).floor(),
                        ((STRIDE * fx + CELL) / scale).floor(),
                        ((STRIDE * fy + CELL) / scale).floor(),
                    ],
                    score: prob[i],
                    reg: [reg[i], reg[h * w + i], reg[2 * h * w + i], reg[3 * h * w + i]],
                });
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Overlap {
    /// Intersection over union, areas (x2 - x1) * (y2 - y1) (torchvision).
    Union,
    /// Intersection over the smaller box, areas (x2 - x1 + 1) * (y2 - y1 + 1).
    Min,
}

fn overlap(a: &[f32; 4], b: &[f32; 4], how: Overlap) -> f32 {
    let one = if how == Overlap::Min { 1.0 } else { 0.0 };
    let area = |r: &[f32; 4]| (r[2] - r[0] + one) * (r[3] - r[1] + one);
    let iw = (a[2].min(b[2]) - a[0].max(b[0]) + one).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1]) + one).max(0.0);
    let inter = iw * ih;
    match how {
        Overlap::Union => inter / (area(a) + area(b) - inter),
        Overlap::Min => inter / area(a).min(area(b)),
    }
}

/// Greedy non-maximum suppression: the indices kept, best score first. A box
/// is dropped when its overlap with a kept one is above `threshold`. Ties in
/// score keep the earlier box.
pub fn nms(c: &[Candidate], threshold: f32, how: Overlap) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&i, &j| c[j].score.total_cmp(&c[i].score).then(i.cmp(&j)));
    let mut keep: Vec<usize> = Vec::new();
    let mut dropped = vec![false; c.len()];
    for (k, &i) in order.iter().enumerate() {
        if dropped[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[k + 1..] {
            if !dropped[j] && overlap(&c[i].b, &c[j].b, how) > threshold {
                dropped[j] = true;
            }
        }
    }
    keep
}

/// First-stage regression: offsets scaled by the width `x2 - x1`.
pub fn regress_first(c: &Candidate) -> [f32; 4] {
    let (w, h) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
    [c.b[0] + c.reg[0] * w, c.b[1] + c.reg[1] * h, c.b[2] + c.reg[2] * w, c.b[3] + c.reg[3] * h]
}

/// Later regressions: offsets scaled by `x2 - x1 + 1`.
pub fn regress(b: &[f32; 4], reg: &[f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    [b[0] + reg[0] * w, b[1] + reg[1] * h, b[2] + reg[2] * w, b[3] + reg[3] * h]
}

/// The square with the box's centre and its longer side.
pub fn square(b: &[f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let l = w.max(h);
    let x1 = b[0] + w * 0.5 - l * 0.5;
    let y1 = b[1] + h * 0.5 - l * 0.5;
    [x1, y1, x1 + l, y1 + l]
}

/// The pixels a box covers, clipped to the image: rows `y0..y1`, columns
/// `x0..x1` (0-based, end exclusive); None when nothing is left. Coordinates
/// truncate toward zero and count from 1, as in facenet-pytorch.
pub fn crop_region(b: &[f32; 4], w: usize, h: usize) -> Option<(usize, usize, usize, usize)> {
    let t = |v: f32| v.trunc() as i64;
    let x = t(b[0]).max(1);
    let y = t(b[1]).max(1);
    let ex = t(b[2]).min(w as i64);
    let ey = t(b[3]).min(h as i64);
    if ex > x - 1 && ey > y - 1 {
        Some(((y - 1) as usize, ey as usize, (x - 1) as usize, ex as usize))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(b: [f32; 4], score: f32) -> Candidate {
        Candidate { b, score, reg: [0.0; 4] }
    }

    #[test]
    fn overlaps_by_hand() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [5.0, 0.0, 15.0, 10.0];
        // Union: 50 / (100 + 100 - 50).
        assert!((overlap(&a, &b, Overlap::Union) - 1.0 / 3.0).abs() < 1e-6);
        // Min, +1 areas: 6*11 / (11*11).
        assert!((overlap(&a, &b, Overlap::Min) - 66.0 / 121.0).abs() < 1e-6);
        let inside = [2.0, 2.0, 4.0, 4.0];
        assert_eq!(overlap(&a, &inside, Overlap::Min), 1.0);
        assert_eq!(overlap(&a, &[20.0, 20.0, 30.0, 30.0], Overlap::Union), 0.0);
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster() {
        let c = vec![
            cand([0.0, 0.0, 10.0, 10.0], 0.8),
            cand([1.0, 1.0, 11.0, 11.0], 0.9),
            cand([50.0, 50.0, 60.0, 60.0], 0.7),
            cand([5.0, 0.0, 15.0, 10.0], 0.95), // IoU 1/3 with the first
        ];
        assert_eq!(nms(&c, 0.5, Overlap::Union), vec![3, 1, 2]);
        // A box inside another is removed by "Min" but not by a loose IoU.
        let c = vec![cand([0.0, 0.0, 20.0, 20.0], 0.9), cand([2.0, 2.0, 6.0, 6.0], 0.8)];
        assert_eq!(nms(&c, 0.7, Overlap::Min), vec![0]);
        assert_eq!(nms(&c, 0.7, Overlap::Union), vec![0, 1]);
        assert!(nms(&[], 0.5, Overlap::Union).is_empty());
    }

    #[test]
    fn generate_maps_cells_to_windows() {
        // 2x3 map, cells (0,1) and (1,2) above 0.6.
        let prob = [0.1, 0.7, 0.2, 0.3, 0.5, 0.9];
        let mut reg = vec![0.0; 4 * 6];
        reg[6 + 5] = 0.25; // dy1 of cell (1, 2)
        let c = generate(&prob, &reg, 2, 3, 0.5, 0.6);
        assert_eq!(c.len(), 2);
        // x = 1, y = 0 at scale 0.5: floor((2+1)/0.5) = 6, floor(1/0.5) = 2, floor(14/0.5) = 28, 24.
        assert_eq!(c[0].b, [6.0, 2.0, 28.0, 24.0]);
        assert_eq!(c[1].b, [10.0, 6.0, 32.0, 28.0]);
        assert_eq!(c[1].reg, [0.0, 0.25, 0.0, 0.0]);
        assert_eq!(c[1].score, 0.9);
    }

    #[test]
    fn regressions_square_and_crop() {
        let c = Candidate { b: [10.0, 20.0, 30.0, 60.0], score: 1.0, reg: [0.1, -0.1, 0.0, 0.5] };
        assert_eq!(regress_first(&c), [12.0, 16.0, 30.0, 80.0]);
        assert_eq!(regress(&c.b, &c.reg), [10.0 + 2.1, 20.0 - 4.1, 30.0, 60.0 + 20.5]);
        assert_eq!(square(&[10.0, 20.0, 30.0, 60.0]), [0.0, 20.0, 40.0, 60.0]);
        assert_eq!(crop_region(&[-5.5, 2.7, 30.9, 500.0], 100, 50), Some((1, 50, 0, 30)));
        assert_eq!(crop_region(&[200.0, 2.0, 230.0, 20.0], 100, 50), None);
    }
}
