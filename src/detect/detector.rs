//! A detector on the GPU: MTCNN's weights loaded once, then photos in,
//! faces out. Used by `detect`, `prepare` and `--align`.

use super::{detect, Face, Nets, Options};
use crate::data::input::open_rgb;
use crate::data::FileResult;
use crate::gpu::Gpu;
use crate::nn::GpuBackend;
use anyhow::Result;
use std::path::{Path, PathBuf};

pub struct Detector<'g> {
    pub b: GpuBackend<'g>,
    pub nets: Nets<GpuBackend<'g>>,
    pub opt: Options,
}

/// `data/mtcnn/mtcnn.safetensors`, or `$ARCFACE_MTCNN`.
pub fn default_weights() -> Result<PathBuf> {
    match std::env::var_os("ARCFACE_MTCNN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => crate::data::bundled("mtcnn/mtcnn.safetensors"),
    }
}

impl<'g> Detector<'g> {
    pub fn open(gpu: &'g Gpu, weights: Option<&Path>, opt: Options) -> Result<Detector<'g>> {
        opt.validate()?;
        let mut b = GpuBackend::new(gpu)?;
        let path = match weights {
            Some(p) => p.to_path_buf(),
            None => default_weights()?,
        };
        let nets = Nets::load(&mut b, &path)?;
        Ok(Detector { b, nets, opt })
    }

    pub fn detect(&mut self, img: &image::RgbImage) -> Result<Vec<Face>> {
        detect(&mut self.b, &self.nets, img, &self.opt)
    }

    /// Faces per file; an unreadable file gets its own error, the rest run.
    /// `draw` writes each photo with its boxes and landmarks there.
    pub fn detect_files(&mut self, files: &[PathBuf], draw: Option<&Path>) -> Result<Vec<FileResult<Vec<Face>>>> {
        if let Some(d) = draw {
            std::fs::create_dir_all(d)?;
        }
        let mut out = Vec::new();
        for (i, path) in files.iter().enumerate() {
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
        Ok(out)
    }
}
