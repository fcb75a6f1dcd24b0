//! A detector on the GPU: MTCNN's weights loaded once, then photos in,
//! faces out. Used by `detect`, `prepare` and `--align`.

use super::{detect_marked, Face, Nets, Options};
use crate::data::input::open_rgb;
use crate::data::photo::{self, DETECT_MAX_SIDE};
use crate::data::FileResult;
use crate::gpu::Gpu;
use crate::io::tensorfile::TensorFile;
use crate::nn::GpuBackend;
use crate::progress::Progress;
use anyhow::Result;
use std::path::{Path, PathBuf};

pub struct Detector<'g> {
    pub b: GpuBackend<'g>,
    pub nets: Nets<GpuBackend<'g>>,
    pub opt: Options,
    /// Counts the photos of `detect_files` (hidden by default).
    pub progress: Progress,
}

/// MTCNN's weights (`data/mtcnn/mtcnn.safetensors`, 2 MB) built into the
/// binary, so that an installed `arcface` detects faces without the source
/// tree.
pub static BUILT_IN_WEIGHTS: &[u8] = include_bytes!("../../data/mtcnn/mtcnn.safetensors");

impl<'g> Detector<'g> {
    pub fn open(gpu: &'g Gpu, weights: Option<&Path>, opt: Options) -> Result<Detector<'g>> {
        opt.validate()?;
        let mut b = GpuBackend::new(gpu)?;
        let nets = match weights {
            Some(path) => Nets::load(&mut b, path)?,
            None => Nets::from_file(&mut b, &TensorFile::parse(BUILT_IN_WEIGHTS)?)?,
        };
        Ok(Detector { b, nets, opt, progress: Progress::hidden() })
    }

    /// Faces in `img`, in its coordinates (a future: it reads results back
    /// from the GPU). A photo larger than
    /// `DETECT_MAX_SIDE` on its longest side is searched scaled down to it
    /// (bounded work: the pyramid of a 40-megapixel photo would take
    /// minutes), and the faces are scaled back; `min_face` then counts in
    /// the scaled photo's pixels.
    pub async fn detect_async(&mut self, img: &image::RgbImage) -> Result<Vec<Face>> {
        self.detect_marked(img, &mut |_| {}).await
    }

    /// `detect_async` calling `mark` as each stage ends (`detect_marked`).
    pub async fn detect_marked(&mut self, img: &image::RgbImage, mark: &mut dyn FnMut(usize)) -> Result<Vec<Face>> {
        let (w, h) = img.dimensions();
        if w.max(h) <= DETECT_MAX_SIDE {
            return detect_marked(&mut self.b, &self.nets, img, &self.opt, mark).await;
        }
        let small = photo::fit(img.clone(), DETECT_MAX_SIDE);
        let factor = w as f32 / small.width() as f32;
        let faces = detect_marked(&mut self.b, &self.nets, &small, &self.opt, mark).await?;
        Ok(faces.iter().map(|f| f.scaled(factor)).collect())
    }

    /// `detect_async`, waited for (native).
    pub fn detect(&mut self, img: &image::RgbImage) -> Result<Vec<Face>> {
        pollster::block_on(self.detect_async(img))
    }

    /// Faces per file; an unreadable file gets its own error, the rest run.
    /// `draw` writes each photo with its boxes and landmarks there.
    pub fn detect_files(&mut self, files: &[PathBuf], draw: Option<&Path>) -> Result<Vec<FileResult<Vec<Face>>>> {
        if let Some(d) = draw {
            std::fs::create_dir_all(d)?;
        }
        let mut out = Vec::new();
        self.progress.expect(files.len() as u64);
        for (i, path) in files.iter().enumerate() {
            self.progress.inc(1);
            let img = match open_rgb(path) {
                Ok(img) => img,
                Err(e) => {
                    out.push(FileResult::failed(path.clone(), &e));
                    continue;
                }
            };
            let faces = self.detect(&img)?;
            if let Some(d) = draw {
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
                let name = d.join(format!("{i:04}_{stem}.png"));
                super::draw::draw(&img, &faces).save(&name)?;
            }
            out.push(FileResult::ok(path.clone(), faces));
        }
        self.progress.finish();
        Ok(out)
    }
}
