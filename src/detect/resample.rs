//! Area resampling of CHW float images (PyTorch's `interpolate(mode="area")`,
//! i.e. adaptive average pooling), which MTCNN's pyramid and crops use.
//! Output pixel i averages input pixels floor(i*in/out) .. ceil((i+1)*in/out),
//! rows and columns independently.

/// A float image, channels first, values 0..255.
#[derive(Clone, Debug)]
pub struct Planar {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Planar {
    pub fn from_rgb(img: &image::RgbImage) -> Planar {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0.0; 3 * h * w];
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                data[c * h * w + y as usize * w + x as usize] = p[c] as f32;
            }
        }
        Planar { c: 3, h, w, data }
    }

    /// Rows `y0..y1`, columns `x0..x1`.
    pub fn crop(&self, y0: usize, y1: usize, x0: usize, x1: usize) -> Planar {
        let (h, w) = (y1 - y0, x1 - x0);
        let mut data = Vec::with_capacity(self.c * h * w);
        for c in 0..self.c {
            for y in y0..y1 {
                let row = c * self.h * self.w + y * self.w;
                data.extend_from_slice(&self.data[row + x0..row + x1]);
            }
        }
        Planar { c: self.c, h, w, data }
    }

    /// Area-resampled to (oh, ow).
    pub fn resize_area(&self, oh: usize, ow: usize) -> Planar {
        // Columns first into (c, h, ow), then rows.
        let cols = windows(self.w, ow);
        let rows = windows(self.h, oh);
        let mut tmp = vec![0.0f64; self.c * self.h * ow];
        for c in 0..self.c {
            for y in 0..self.h {
                let src = &self.data[(c * self.h + y) * self.w..][..self.w];
                for (j, &(a, b)) in cols.iter().enumerate() {
                    let s: f64 = src[a..b].iter().map(|&v| v as f64).sum();
                    tmp[(c * self.h + y) * ow + j] = s / (b - a) as f64;
                }
            }
        }
        let mut data = vec![0.0f32; self.c * oh * ow];
        for c in 0..self.c {
            for (i, &(a, b)) in rows.iter().enumerate() {
                for j in 0..ow {
                    let s: f64 = (a..b).map(|y| tmp[(c * self.h + y) * ow + j]).sum();
                    data[(c * oh + i) * ow + j] = (s / (b - a) as f64) as f32;
                }
            }
        }
        Planar { c: self.c, h: oh, w: ow, data }
    }

    /// MTCNN's input scaling: (v - 127.5) / 128.
    pub fn normalised(&self) -> Vec<f32> {
        self.data.iter().map(|&v| (v - 127.5) * 0.0078125).collect()
    }
}

/// Adaptive-pooling windows [start, end) of `out` cells over `len` inputs.
fn windows(len: usize, out: usize) -> Vec<(usize, usize)> {
    (0..out).map(|i| ((i * len) / out, ((i + 1) * len).div_ceil(out))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_input() {
        assert_eq!(windows(4, 2), vec![(0, 2), (2, 4)]);
        // 5 -> 3: [0,2), [1,4), [3,5) (overlapping, as PyTorch).
        assert_eq!(windows(5, 3), vec![(0, 2), (1, 4), (3, 5)]);
        // Upsampling repeats pixels.
        assert_eq!(windows(2, 4), vec![(0, 1), (0, 1), (1, 2), (1, 2)]);
    }

    #[test]
    fn area_resize_averages_by_hand() {
        // One channel, 2x4 -> 1x2.
        let p = Planar { c: 1, h: 2, w: 4, data: vec![0., 2., 4., 6., 8., 10., 12., 14.] };
        let r = p.resize_area(1, 2);
        assert_eq!(r.data, vec![5.0, 9.0]);
        let c = p.crop(1, 2, 1, 3);
        assert_eq!((c.h, c.w, c.data), (1, 2, vec![10.0, 12.0]));
    }
}
