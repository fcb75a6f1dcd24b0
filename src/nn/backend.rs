//! The ops a model is made of, behind one trait with two implementations:
//! the GPU kernels (`GpuBackend`) and the CPU reference kernels
//! (`CpuBackend`, f64). Models are written once, generically, so the GPU
//! training step can be checked against the very same step composed from the
//! references.

use crate::kernels::activation::Act;
use crate::kernels::arcface::ArcFace;
use crate::kernels::batchnorm::{BatchNorm, BnParams, BnSaved};
use crate::kernels::conv2d::{Conv2d, Grads};
use crate::kernels::linear::{Linear, LinearGrads};
use crate::kernels::maxpool::MaxPool;
use crate::kernels::sgd::Sgd;
use anyhow::Result;

pub trait Backend {
    /// A tensor handle; clones share storage.
    type T: Clone;
    /// What the ArcFace backward pass needs from its forward pass.
    type ArcCache;

    fn upload(&mut self, data: &[f32], shape: &[usize]) -> Result<Self::T>;
    /// Class labels (u32 on the GPU).
    fn labels(&mut self, labels: &[u32]) -> Result<Self::T>;
    /// Finishes pending work and copies the values out.
    fn download(&mut self, t: &Self::T) -> Vec<f32>;
    fn shape<'a>(&self, t: &'a Self::T) -> &'a [usize];
    /// A view with another shape (flatten): no copy.
    fn reshape(&self, t: &Self::T, shape: &[usize]) -> Result<Self::T>;
    /// Images `start..start + len` of a batch (copied).
    fn slice_batch(&mut self, t: &Self::T, start: usize, len: usize) -> Result<Self::T>;
    /// Batches joined along the first dimension.
    fn concat_batch(&mut self, parts: &[Self::T]) -> Result<Self::T>;

    fn conv2d(&mut self, s: &Conv2d, x: &Self::T, w: &Self::T, b: Option<&Self::T>) -> Result<Self::T>;
    fn conv2d_backward(&mut self, s: &Conv2d, x: &Self::T, w: &Self::T, dy: &Self::T) -> Result<Grads<Self::T>>;
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
    fn prelu(&mut self, x: &Self::T, slope: &Self::T) -> Result<Self::T>;
    /// Forward only (MTCNN's detectors are not trained here).
    fn maxpool(&mut self, s: &MaxPool, x: &Self::T) -> Result<Self::T>;
    /// (dx, dslope)
    fn prelu_backward(&mut self, x: &Self::T, slope: &Self::T, dy: &Self::T) -> Result<(Self::T, Self::T)>;
    fn act(&mut self, a: Act, x: &Self::T) -> Result<Self::T>;
    fn act_backward(&mut self, a: Act, x: &Self::T, dy: &Self::T) -> Result<Self::T>;
    fn add(&mut self, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// acc += g, in place.
    fn accumulate(&mut self, acc: &Self::T, g: &Self::T) -> Result<()>;
    fn linear(&mut self, s: &Linear, x: &Self::T, w: &Self::T, b: Option<&Self::T>) -> Result<Self::T>;
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
    /// The largest tensor one kernel may bind; models split batches to fit.
    fn max_binding_bytes(&self) -> u64;
}
