//! MTCNN's three networks (graphs from `models::mtcnn`) with their weights,
//! run by the graph executor on any `Backend`, so the GPU networks can be
//! checked against the same networks on the CPU references.
//!
//! Two changes of form, not of values, happen at load: the two or three heads
//! of each network become one layer (one dispatch; the heads only differ in
//! their output rows), and the first dense layer of R-Net and O-Net gets its
//! columns permuted from the (W, H, C) flatten order the weights were trained
//! with to our (C, H, W) order, so no activation is ever transposed.

use crate::io::tensorfile::TensorFile;
use crate::kernels::maxpool::out_len;
use crate::kernels::resample::{AreaResize, Rect};
use crate::models::graph::GraphNet;
use crate::models::mtcnn;
use crate::nn::Backend;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// P-, R- and O-Net on a backend, each a graph with its weights.
pub struct Nets<B: Backend> {
    pnet: GraphNet<B>,
    rnet: GraphNet<B>,
    onet: GraphNet<B>,
}

/// conv1's output of one P-Net band at most: bounds the detector's memory
/// on large photos (a 2000-pixel photo's first pyramid level in one band
/// held over 700 MB on lavapipe); the 10 rows two bands share cost about 6%
/// more work at this size.
const PNET_BAND_BYTES: u64 = 8 << 20;

/// conv1's output of the P-Net bands recorded in one submission, at most:
/// a band's values of one size serve the next band's in the recording, but
/// levels of other sizes hold theirs until it is submitted, so this bounds
/// the pyramid's memory (recording a 2000-pixel photo's whole pyramid at
/// once raised the server's peak under load by 400 MB). Every band's
/// outputs are read back together at the end.
const PNET_BATCH_BYTES: usize = 8 << 20;

/// A band of P-Net's input rows, and how many output rows it gives.
struct Band {
    rows: (usize, usize),
    out_rows: usize,
}

/// Bands of input rows so that no activation outgrows one binding or
/// `PNET_BAND_BYTES`: the largest is conv1's output, 10 channels at about
/// the input size (and the im2col matrices, a few times that, on the CPU
/// kernel set). Output row y sees input rows 2y..2y+11; a band starting at
/// an even row keeps the 2x2 pooling windows aligned with the whole image's,
/// so the maps are the same for any band.
fn pnet_bands(h: usize, w: usize, max_binding: u64) -> Vec<Band> {
    let out_h = pnet_out(h);
    let budget = (max_binding / 2).min(PNET_BAND_BYTES) as usize;
    let band_out = ((budget / (10 * 4 * w)).saturating_sub(12) / 2).max(1);
    (0..out_h)
        .step_by(band_out)
        .map(|y0| {
            let y1 = (y0 + band_out).min(out_h);
            Band { rows: (2 * y0, (2 * y1 + 10).min(h)), out_rows: y1 - y0 }
        })
        .collect()
}

/// P-Net's output rows (or columns) for an input `len` pixels long.
fn pnet_out(len: usize) -> usize {
    out_len(len - 2, 2, 2, 0, true) - 4
}

/// P-Net's outputs for one image: face probability (h, w) and box offsets (4, h, w).
pub struct PnetMaps {
    pub h: usize,
    pub w: usize,
    pub prob: Vec<f32>,
    pub reg: Vec<f32>,
}

/// R-Net (24x24 crops) or O-Net (48x48) outputs, one row per crop.
pub struct CropOutputs {
    pub prob: Vec<f32>,
    pub reg: Vec<[f32; 4]>,
    /// O-Net only: 5 x's then 5 y's, relative to the box.
    pub landmarks: Vec<[f32; 10]>,
}

/// Two-class softmax, the face class: 1 / (1 + e^(a0 - a1)).
fn face_probability(a0: f32, a1: f32) -> f32 {
    1.0 / (1.0 + (a0 - a1).exp())
}

fn concat_rows(parts: &[&crate::io::tensorfile::Loaded]) -> (Vec<f32>, usize) {
    let mut v = Vec::new();
    let mut rows = 0;
    for p in parts {
        v.extend_from_slice(&p.values);
        rows += p.shape[0];
    }
    (v, rows)
}

/// Columns of a dense weight [out, c*h*w] from (W, H, C) order to (C, H, W).
fn whc_to_chw(w: &[f32], out: usize, c: usize, h: usize, wd: usize) -> Vec<f32> {
    let k = c * h * wd;
    let mut r = vec![0.0; w.len()];
    for o in 0..out {
        for ci in 0..c {
            for y in 0..h {
                for x in 0..wd {
                    r[o * k + (ci * h + y) * wd + x] = w[o * k + (x * h + y) * c + ci];
                }
            }
        }
    }
    r
}

impl<B: Backend> Nets<B> {
    /// Reads `mtcnn.safetensors` (names `pnet.*`, `rnet.*`, `onet.*`).
    pub fn load(b: &mut B, path: &Path) -> Result<Nets<B>> {
        let f = TensorFile::read(path).with_context(|| format!("{}: cannot read the MTCNN weights", path.display()))?;
        Nets::from_file(b, &f).with_context(|| format!("{}: not MTCNN weights", path.display()))
    }

    pub fn from_file(b: &mut B, f: &TensorFile) -> Result<Nets<B>> {
        let mut w: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
        for (name, t) in &f.tensors {
            if name.contains("conv4_") || name.contains("dense5_") || name.contains("dense6_") {
                continue; // heads, joined below
            }
            let v = match name.as_str() {
                "rnet.dense4.weight" => whc_to_chw(&t.values, 128, 64, 3, 3),
                "onet.dense5.weight" => whc_to_chw(&t.values, 256, 128, 3, 3),
                _ => t.values.clone(),
            };
            w.insert(name.clone(), (t.shape.clone(), v));
        }
        let heads: [(&str, &[&str], bool); 3] = [
            ("pnet.head", &["pnet.conv4_1", "pnet.conv4_2"], true),
            ("rnet.head", &["rnet.dense5_1", "rnet.dense5_2"], false),
            ("onet.head", &["onet.dense6_1", "onet.dense6_2", "onet.dense6_3"], false),
        ];
        for (joined, parts, conv) in heads {
            let ws: Vec<_> = parts.iter().map(|p| f.get(&format!("{p}.weight"))).collect::<Result<_>>()?;
            let bs: Vec<_> = parts.iter().map(|p| f.get(&format!("{p}.bias"))).collect::<Result<_>>()?;
            let (wv, rows) = concat_rows(&ws);
            let (bv, _) = concat_rows(&bs);
            let inp = ws[0].shape[1];
            let shape = if conv { vec![rows, inp, 1, 1] } else { vec![rows, inp] };
            w.insert(format!("{joined}.weight"), (shape, wv));
            w.insert(format!("{joined}.bias"), (vec![rows], bv));
        }
        let mut net = |built: crate::models::builder::Built| -> Result<GraphNet<B>> {
            let mut weights = Vec::new();
            for p in &built.params {
                let Some((shape, v)) = w.get(&p.name) else { bail!("no tensor `{}`", p.name) };
                weights.push((p.name.clone(), shape.clone(), v.clone()));
            }
            GraphNet::new(b, built.graph, weights)
        };
        Ok(Nets { pnet: net(mtcnn::pnet())?, rnet: net(mtcnn::rnet())?, onet: net(mtcnn::onet())? })
    }

    /// P-Net on one image of pixel values (3, h, w), h and w >= 12, at its
    /// own size.
    pub async fn pnet(&self, b: &mut B, pixels: &[f32], h: usize, w: usize) -> Result<PnetMaps> {
        let photo = Photo::upload(b, pixels, h, w)?;
        let mut maps = self.pnet_pyramid(b, &photo, &[(h, w)]).await?;
        Ok(maps.pop().expect("one level"))
    }

    /// P-Net on every level of the photo's pyramid ((height, width) each, at
    /// least 12x12): each band's input is resampled from the photo on the
    /// device; the bands recorded are submitted whenever their conv1 output
    /// reaches `PNET_BATCH_BYTES` (memory stays bounded), never waited for,
    /// and every band's outputs read back at once: one read-back per pyramid.
    pub async fn pnet_pyramid(
        &self,
        b: &mut B,
        photo: &Photo<B::T>,
        levels: &[(usize, usize)],
    ) -> Result<Vec<PnetMaps>> {
        let (face, boxes) = (self.pnet.def().part("face")?, self.pnet.def().part("box")?);
        let mut maps: Vec<PnetMaps> = levels
            .iter()
            .map(|&(h, w)| PnetMaps { h: pnet_out(h), w: pnet_out(w), prob: Vec::new(), reg: Vec::new() })
            .collect();
        let mut reg: Vec<Vec<Vec<f32>>> = levels.iter().map(|_| vec![Vec::new(); 4]).collect();
        let mut outputs: Vec<(usize, Band, B::T)> = Vec::new();
        let mut recorded_bytes = 0;
        let all: Vec<(usize, Band)> = levels
            .iter()
            .enumerate()
            .map(|(i, &(h, w))| {
                if h < 12 || w < 12 {
                    bail!("P-Net needs at least 12x12 pixels, got {w}x{h}");
                }
                Ok(pnet_bands(h, w, b.max_binding_bytes()).into_iter().map(move |band| (i, band)))
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        for (i, band) in all {
            let (h, w) = levels[i];
            let input = photo.resampled(b, (h, w), band.rows, &[Rect::whole(photo.h, photo.w)])?;
            recorded_bytes += 10 * 4 * (band.rows.1 - band.rows.0) * w;
            outputs.push((i, band, self.pnet.forward(b, &input)?));
            if recorded_bytes >= PNET_BATCH_BYTES {
                b.submit_recorded();
                recorded_bytes = 0;
            }
        }
        let heads: Vec<B::T> = outputs.iter().map(|(_, _, t)| t.clone()).collect();
        let values = b.download_all_async(&heads).await;
        for ((i, band, _), v) in outputs.into_iter().zip(&values) {
            let (bh, bw) = (pnet_out(band.rows.1 - band.rows.0), maps[i].w);
            // The band may compute a partial extra row: ignored.
            let plane = |c: usize| &v[c * bh * bw..c * bh * bw + band.out_rows * bw];
            let prob = plane(face.start).iter().zip(plane(face.start + 1)).map(|(&a0, &a1)| face_probability(a0, a1));
            maps[i].prob.extend(prob);
            for (c, r) in boxes.clone().zip(reg[i].iter_mut()) {
                r.extend_from_slice(plane(c));
            }
        }
        for (m, r) in maps.iter_mut().zip(reg) {
            m.reg = r.concat();
        }
        Ok(maps)
    }

    /// R-Net on the photo's rectangles `rects`, each resampled to 24x24.
    pub async fn rnet(&self, b: &mut B, photo: &Photo<B::T>, rects: &[Rect]) -> Result<CropOutputs> {
        crop_outputs(b, &self.rnet, photo, rects).await
    }

    /// O-Net on the photo's rectangles `rects`, each resampled to 48x48.
    pub async fn onet(&self, b: &mut B, photo: &Photo<B::T>, rects: &[Rect]) -> Result<CropOutputs> {
        crop_outputs(b, &self.onet, photo, rects).await
    }
}

/// A photo on the device, (1, 3, h, w) pixel values 0..255: uploaded once,
/// every network input is resampled from it there.
pub struct Photo<T> {
    pub t: T,
    pub h: usize,
    pub w: usize,
}

/// MTCNN's input scaling of pixel values: (v - 127.5) / 128.
const OFFSET: f32 = -127.5;
const SCALE: f32 = 0.0078125;

impl<T> Photo<T> {
    /// `pixels` (3, h, w), refused where one kernel could not bind it.
    pub fn upload<B: Backend<T = T>>(b: &mut B, pixels: &[f32], h: usize, w: usize) -> Result<Photo<T>> {
        let bytes = pixels.len() as u64 * 4;
        if bytes > b.max_binding_bytes() {
            bail!(
                "a {w}x{h} photo takes {} MiB on the device, over this adapter's largest binding of {} MiB: \
                 scale it down",
                bytes >> 20,
                b.max_binding_bytes() >> 20
            );
        }
        Ok(Photo { t: b.upload(pixels, &[1, 3, h, w])?, h, w })
    }

    /// An RGB image as planes of pixel values.
    pub fn from_rgb<B: Backend<T = T>>(b: &mut B, img: &image::RgbImage) -> Result<Photo<T>> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut planes = vec![0.0; 3 * h * w];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                planes[c * h * w + i] = p[c] as f32;
            }
        }
        Photo::upload(b, &planes, h, w)
    }

    /// `rects` resampled to `size` (rows `rows` of it) and scaled for the
    /// networks: (rects, 3, rows, size.1).
    fn resampled<B: Backend<T = T>>(
        &self,
        b: &mut B,
        size: (usize, usize),
        rows: (usize, usize),
        rects: &[Rect],
    ) -> Result<T> {
        let s =
            AreaResize { c: 3, h: self.h, w: self.w, out_h: size.0, out_w: size.1, rows, offset: OFFSET, scale: SCALE };
        b.area_resize(&s, &self.t, rects)
    }
}

/// A crop network on the photo's rectangles, in as few batches as half a
/// binding allows (the other half for the convolutions' scratch): every
/// batch's crops resampled on the device and recorded, then one read-back
/// for all.
async fn crop_outputs<B: Backend>(
    b: &mut B,
    net: &GraphNet<B>,
    photo: &Photo<B::T>,
    rects: &[Rect],
) -> Result<CropOutputs> {
    let size = net.def().input_size;
    let chunk = net.program.images_per_run(b.max_binding_bytes() / 2);
    let mut outputs = Vec::new();
    for part in rects.chunks(chunk) {
        let x = photo.resampled(b, (size, size), (0, size), part)?;
        outputs.push(net.forward(b, &x)?);
    }
    let values = b.download_all_async(&outputs).await;
    let mut out = CropOutputs { prob: Vec::new(), reg: Vec::new(), landmarks: Vec::new() };
    let (face, boxes) = (net.def().part("face")?, net.def().part("box")?);
    let marks = net.def().part("landmarks").ok();
    for (y, v) in outputs.iter().zip(values) {
        for row in v.chunks(b.shape(y)[1]) {
            out.prob.push(face_probability(row[face.start], row[face.start + 1]));
            out.reg.push(row[boxes.clone()].try_into().expect("four box offsets"));
            if let Some(l) = &marks {
                out.landmarks.push(row[l.clone()].try_into().expect("ten landmark coordinates"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whc_flatten_maps_to_chw() {
        // One output, c=2, h=1, w=3: (W,H,C) column (x*1 + 0)*2 + c.
        let w: Vec<f32> = (0..6).map(|v| v as f32).collect();
        // chw index c*3 + x  <- whc index x*2 + c
        assert_eq!(whc_to_chw(&w, 1, 2, 1, 3), vec![0., 2., 4., 1., 3., 5.]);
    }

    #[test]
    fn face_probability_is_the_softmax_of_two() {
        assert!((face_probability(0.0, 0.0) - 0.5).abs() < 1e-7);
        let (a0, a1) = (0.3f32, 1.7f32);
        let want = a1.exp() / (a0.exp() + a1.exp());
        assert!((face_probability(a0, a1) - want).abs() < 1e-6);
    }
}
