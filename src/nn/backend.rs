//! The ops a model is made of, behind one trait with two implementations:
//! the GPU kernels (`GpuBackend`) and the CPU reference kernels
//! (`CpuBackend`, f64). Models are written once, generically, so the GPU
//! training step can be checked against the very same step composed from the
//! references.

use crate::kernels::activation::Act;
use crate::kernels::arcface::ArcFace;
use crate::kernels::batchnorm::{BatchNorm, BnParams, BnSaved};
use crate::kernels::bn_act::BnActGrads;
use crate::kernels::conv2d::{Conv2d, Grads};
use crate::kernels::epilogue::{Epilogue, OutAct};
use crate::kernels::linear::{Linear, LinearGrads};
use crate::kernels::maxpool::MaxPool;
use crate::kernels::resample::{AreaResize, Rect};
use crate::kernels::sgd::Sgd;
use anyhow::Result;

/// A packed tensor and a view of it per part (`Backend::pack`).
pub type Packing<T> = (T, Vec<T>);

pub trait Backend {
    /// A tensor handle; clones share storage.
    type T: Clone;
    /// What the ArcFace backward pass needs from its forward pass.
    type ArcCache;

    fn upload(&mut self, data: &[f32], shape: &[usize]) -> Result<Self::T>;
    /// Class labels (u32 on the GPU).
    fn labels(&mut self, labels: &[u32]) -> Result<Self::T>;
    /// Finishes pending work and copies the values out (blocking: native
    /// code only).
    fn download(&mut self, t: &Self::T) -> Vec<f32>;
    /// `download` as a future, for code that also runs on the web.
    fn download_async(&mut self, t: &Self::T) -> impl std::future::Future<Output = Vec<f32>>;
    /// `download_async` of several tensors with one read-back (one wait
    /// for the device, not one per tensor).
    fn download_all_async(&mut self, ts: &[Self::T]) -> impl std::future::Future<Output = Vec<Vec<f32>>>;
    fn shape<'a>(&self, t: &'a Self::T) -> &'a [usize];
    /// A view with another shape (flatten): no copy.
    fn reshape(&self, t: &Self::T, shape: &[usize]) -> Result<Self::T>;
    /// Images `start..start + len` of a batch (copied).
    fn slice_batch(&mut self, t: &Self::T, start: usize, len: usize) -> Result<Self::T>;
    /// Batches joined along the first dimension.
    fn concat_batch(&mut self, parts: &[Self::T]) -> Result<Self::T>;

    fn conv2d(&mut self, s: &Conv2d, x: &Self::T, w: &Self::T, b: Option<&Self::T>) -> Result<Self::T>;
    fn conv2d_backward(&mut self, s: &Conv2d, x: &Self::T, w: &Self::T, dy: &Self::T) -> Result<Grads<Self::T>>;
    /// The weight and bias gradients alone, for a layer whose input needs
    /// no gradient (the image): the input gradient is never computed.
    fn conv2d_backward_params(
        &mut self,
        s: &Conv2d,
        x: &Self::T,
        w: &Self::T,
        dy: &Self::T,
    ) -> Result<(Self::T, Option<Self::T>)> {
        let g = self.conv2d_backward(s, x, w, dy)?;
        Ok((g.dw, g.db))
    }
    /// Train mode also updates the running statistics in `p`.
    fn batchnorm(
        &mut self,
        s: &BatchNorm,
        p: &BnParams<Self::T>,
        x: &Self::T,
        train: bool,
    ) -> Result<(Self::T, BnSaved<Self::T>)>;
    /// (dx, dgamma, dbeta)
    fn batchnorm_backward(
        &mut self,
        s: &BatchNorm,
        p: &BnParams<Self::T>,
        x: &Self::T,
        saved: &BnSaved<Self::T>,
        dy: &Self::T,
    ) -> Result<(Self::T, Self::T, Self::T)>;
    /// Batch norm, then PReLU (with `slope`), then `+ skip`: one fused
    /// kernel where a backend has it, else (by default) the three ops.
    fn bn_act(
        &mut self,
        s: &BatchNorm,
        p: &BnParams<Self::T>,
        x: &Self::T,
        slope: Option<&Self::T>,
        skip: Option<&Self::T>,
        train: bool,
    ) -> Result<(Self::T, BnSaved<Self::T>)> {
        composed_bn_act(self, s, p, x, slope, skip, train)
    }
    /// The gradients of `bn_act` (the skip's is dy itself).
    fn bn_act_backward(
        &mut self,
        s: &BatchNorm,
        p: &BnParams<Self::T>,
        x: &Self::T,
        saved: &BnSaved<Self::T>,
        slope: Option<&Self::T>,
        dy: &Self::T,
    ) -> Result<BnActGrads<Self::T>> {
        composed_bn_act_backward(self, s, p, x, saved, slope, dy)
    }
    fn prelu(&mut self, x: &Self::T, slope: &Self::T) -> Result<Self::T>;
    fn maxpool(&mut self, s: &MaxPool, x: &Self::T) -> Result<Self::T>;
    /// dx: each window's gradient to its largest input.
    fn maxpool_backward(&mut self, s: &MaxPool, x: &Self::T, dy: &Self::T) -> Result<Self::T>;
    /// Rectangles of the image `img` (1, c, h, w) area-resampled
    /// (`kernels::resample`): (rects, c, band rows, out_w).
    fn area_resize(&mut self, s: &AreaResize, img: &Self::T, rects: &[Rect]) -> Result<Self::T>;
    /// (dx, dslope)
    fn prelu_backward(&mut self, x: &Self::T, slope: &Self::T, dy: &Self::T) -> Result<(Self::T, Self::T)>;
    fn act(&mut self, a: Act, x: &Self::T) -> Result<Self::T>;
    fn act_backward(&mut self, a: Act, x: &Self::T, dy: &Self::T) -> Result<Self::T>;
    fn add(&mut self, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// acc += g, in place.
    fn accumulate(&mut self, acc: &Self::T, g: &Self::T) -> Result<()>;
    fn linear(&mut self, s: &Linear, x: &Self::T, w: &Self::T, b: Option<&Self::T>) -> Result<Self::T>;
    /// A convolution finishing each output with the epilogue `e` (an
    /// activation, then `+ skip`): one kernel where a backend has it, else
    /// (by default) the separate ops. Inference only: no backward.
    fn conv2d_with(
        &mut self,
        s: &Conv2d,
        x: &Self::T,
        w: &Self::T,
        b: Option<&Self::T>,
        e: &Epilogue<Self::T>,
    ) -> Result<Self::T> {
        let y = self.conv2d(s, x, w, b)?;
        self.epilogue(y, e)
    }
    /// `linear` finishing each output with `e`, as `conv2d_with`.
    fn linear_with(
        &mut self,
        s: &Linear,
        x: &Self::T,
        w: &Self::T,
        b: Option<&Self::T>,
        e: &Epilogue<Self::T>,
    ) -> Result<Self::T> {
        let y = self.linear(s, x, w, b)?;
        self.epilogue(y, e)
    }
    /// The epilogue `e` as separate ops on a layer's output `y`.
    fn epilogue(&mut self, y: Self::T, e: &Epilogue<Self::T>) -> Result<Self::T> {
        let y = match e.act {
            None => y,
            Some(OutAct::Prelu(slope)) => self.prelu(&y, slope)?,
            Some(OutAct::Fixed(a)) => self.act(a, &y)?,
        };
        match e.skip {
            Some(skip) => self.add(&y, skip),
            None => Ok(y),
        }
    }
    fn linear_backward(&mut self, s: &Linear, x: &Self::T, w: &Self::T, dy: &Self::T) -> Result<LinearGrads<Self::T>>;
    fn l2norm(&mut self, x: &Self::T) -> Result<Self::T>;
    fn arcface(&mut self, a: &ArcFace, e: &Self::T, w: &Self::T, labels: &Self::T)
        -> Result<(Self::T, Self::ArcCache)>;
    /// (d embeddings, d class weights)
    fn arcface_backward(
        &mut self,
        a: &ArcFace,
        cache: &Self::ArcCache,
        labels: &Self::T,
        dlogits: &Self::T,
    ) -> Result<(Self::T, Self::T)>;
    /// (mean loss [1], probabilities)
    fn cross_entropy(&mut self, logits: &Self::T, labels: &Self::T) -> Result<(Self::T, Self::T)>;
    /// d mean loss / d logits.
    fn cross_entropy_backward(&mut self, probs: &Self::T, labels: &Self::T) -> Result<Self::T>;
    fn softmax(&mut self, logits: &Self::T) -> Result<Self::T>;
    /// In place on `param` and `velocity`.
    fn sgd(&mut self, h: &Sgd, param: &Self::T, grad: &Self::T, velocity: &Self::T) -> Result<()>;
    /// A zero tensor.
    fn zeros(&mut self, shape: &[usize]) -> Result<Self::T>;
    /// dst = src (same size).
    fn copy(&mut self, src: &Self::T, dst: &Self::T) -> Result<()>;
    /// `parts` copied into one new tensor: it, and a view of it per part.
    /// `None` where the backend does not pack (the CPU references, which
    /// have no dispatches to save).
    fn pack(&mut self, _parts: &[&Self::T]) -> Result<Option<Packing<Self::T>>> {
        Ok(None)
    }
    /// Whether `view`'s storage lies in `packed`.
    fn holds(&self, _packed: &Self::T, _view: &Self::T) -> bool {
        false
    }
    /// With `on`, a kernel output may take the storage of a tensor dropped
    /// earlier in the same recording (an eval-mode pass lets each value go
    /// after its last reader); off, storage is reused from one submission
    /// to the next only. Backends without a pool ignore it.
    fn plan_memory(&mut self, _on: bool) {}
    /// Starts the work recorded so far without waiting for it: the storage
    /// its values let go of serves what is recorded next. Backends that run
    /// each op at once ignore it.
    fn submit_recorded(&mut self) {}
    /// The largest tensor one kernel may bind; models split batches to fit.
    fn max_binding_bytes(&self) -> u64;
}

/// `Backend::bn_act` from batch norm, PReLU and add.
pub fn composed_bn_act<B: Backend + ?Sized>(
    b: &mut B,
    s: &BatchNorm,
    p: &BnParams<B::T>,
    x: &B::T,
    slope: Option<&B::T>,
    skip: Option<&B::T>,
    train: bool,
) -> Result<(B::T, BnSaved<B::T>)> {
    let (mut y, saved) = b.batchnorm(s, p, x, train)?;
    if let Some(a) = slope {
        y = b.prelu(&y, a)?;
    }
    if let Some(k) = skip {
        y = b.add(&y, k)?;
    }
    Ok((y, saved))
}

/// `Backend::bn_act_backward` from the ops' own backward passes; the PReLU's
/// input is recomputed from the saved statistics.
pub fn composed_bn_act_backward<B: Backend + ?Sized>(
    b: &mut B,
    s: &BatchNorm,
    p: &BnParams<B::T>,
    x: &B::T,
    saved: &BnSaved<B::T>,
    slope: Option<&B::T>,
    dy: &B::T,
) -> Result<BnActGrads<B::T>> {
    let (dz, ds) = match slope {
        Some(a) => {
            let fixed = BnParams { running_mean: saved.mean.clone(), running_var: saved.var.clone(), ..p.clone() };
            let (z, _) = b.batchnorm(s, &fixed, x, false)?;
            let (dz, ds) = b.prelu_backward(&z, a, dy)?;
            (dz, Some(ds))
        }
        None => (dy.clone(), None),
    };
    let (dx, dg, db) = b.batchnorm_backward(s, p, x, saved, &dz)?;
    Ok((dx, dg, db, ds))
}
