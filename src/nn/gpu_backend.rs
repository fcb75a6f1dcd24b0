//! `Backend` on the GPU kernels. All work is recorded into one command
//! encoder and submitted when results are read (or on `flush`), so a whole
//! training step is one submission.

use super::backend::Packing;
use super::Backend;
use crate::gpu::readback::{self, read_now};
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::kernels::activation::{self, Act};
use crate::kernels::arcface::{self, ArcFace, ArcSaved};
use crate::kernels::batchnorm::{self, BatchNorm, BnParams, BnSaved};
use crate::kernels::bn_act::{self, BnActGrads};
use crate::kernels::conv2d::{self, Conv2d, Grads, Path};
use crate::kernels::epilogue::Epilogue;
use crate::kernels::linear::{self, Linear, LinearGrads};
use crate::kernels::maxpool::{self, MaxPool};
use crate::kernels::resample::{self, AreaResize, Rect};
use crate::kernels::sgd::{self, LossScale, Sgd, INITIAL_LOSS_SCALE};
use crate::kernels::{l2norm, residual, softmax_xent};
use anyhow::{bail, Result};

pub struct GpuBackend<'g> {
    pub gpu: &'g Gpu,
    rec: Recorder<'g>,
    /// 1.0, the upstream gradient of the loss.
    one: Tensor,
    /// Tests lower this to make models split small batches.
    pub binding_limit: u64,
    /// Mixed precision (`mixed_precision`): the loss scale, with training
    /// batches stored in f16 (and so every activation and its gradient).
    loss_scale: Option<LossScale>,
}

/// Refuses mixed precision on an adapter without f16 storage.
pub fn require_f16(gpu: &Gpu) -> Result<()> {
    if !gpu.has_f16() {
        bail!(
            "--precision f16: the adapter `{}` has no f16 storage (wgpu's SHADER_F16); use --precision f32",
            gpu.info.name
        );
    }
    Ok(())
}

impl<'g> GpuBackend<'g> {
    pub fn new(gpu: &'g Gpu) -> Result<GpuBackend<'g>> {
        Ok(GpuBackend {
            gpu,
            rec: Recorder::new(gpu),
            one: Tensor::from_f32(gpu, &[1.0], &[1])?,
            binding_limit: gpu.limits.max_storage_buffer_binding_size,
            loss_scale: None,
        })
    }

    /// Trains in mixed precision from now on: `upload_batch` stores batches
    /// in f16, so the activations and their gradients that follow them are
    /// f16 while weights, their gradients, momentum and every sum stay f32;
    /// the loss is scaled on the GPU (`sgd::LossScale`). Refused on adapters
    /// without f16 storage.
    pub fn mixed_precision(&mut self) -> Result<()> {
        require_f16(self.gpu)?;
        self.loss_scale = Some(LossScale::new(self.gpu, INITIAL_LOSS_SCALE)?);
        Ok(())
    }

    /// The loss scale's [scale, good steps in a row, steps skipped in all]
    /// (read back, waiting), in mixed precision.
    pub fn loss_scale_state(&mut self) -> Option<[f32; 3]> {
        let state = self.loss_scale.as_ref()?.state.clone();
        let s = self.download(&state);
        Some([s[0], s[1], s[2]])
    }

    /// The loss scale's state ([4], `sgd::LossScale`) in mixed precision:
    /// saved and restored with a run's optimiser state.
    pub fn loss_scale(&self) -> Option<&Tensor> {
        self.loss_scale.as_ref().map(|l| &l.state)
    }

    /// A training batch, in f16 in mixed precision.
    pub fn upload_batch(&mut self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let dtype = if self.loss_scale.is_some() { Dtype::F16 } else { Dtype::F32 };
        Tensor::from_f32_as(self.gpu, data, shape, dtype)
    }

    /// Submits what was recorded so far.
    pub fn flush(&mut self) -> wgpu::SubmissionIndex {
        std::mem::replace(&mut self.rec, Recorder::new(self.gpu)).submit()
    }

    /// Adds a training step's loss and correct count to `tally` (see
    /// `softmax_xent::tally`), on the GPU.
    pub fn tally(&mut self, tally: &Tensor, loss: &Tensor, logits: &Tensor, labels: &Tensor) -> Result<()> {
        softmax_xent::tally(&mut self.rec, tally, loss, logits, labels)
    }

    /// The recorder of the work not yet submitted (to time it, say).
    pub fn recorder(&mut self) -> &mut Recorder<'g> {
        &mut self.rec
    }
}

impl<'g> Backend for GpuBackend<'g> {
    type T = Tensor;
    type ArcCache = ArcSaved;

    fn upload(&mut self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_f32(self.gpu, data, shape)
    }
    fn labels(&mut self, labels: &[u32]) -> Result<Tensor> {
        Tensor::from_u32(self.gpu, labels, &[labels.len()])
    }
    fn download(&mut self, t: &Tensor) -> Vec<f32> {
        read_now(std::mem::replace(&mut self.rec, Recorder::new(self.gpu)), t)
    }
    fn download_async(&mut self, t: &Tensor) -> impl std::future::Future<Output = Vec<f32>> {
        readback::read(std::mem::replace(&mut self.rec, Recorder::new(self.gpu)), t)
    }
    fn download_all_async(&mut self, ts: &[Tensor]) -> impl std::future::Future<Output = Vec<Vec<f32>>> {
        let rec = std::mem::replace(&mut self.rec, Recorder::new(self.gpu));
        let ts: Vec<Tensor> = ts.to_vec();
        async move {
            let refs: Vec<&Tensor> = ts.iter().collect();
            readback::read_all(rec, &refs).await
        }
    }
    fn shape<'a>(&self, t: &'a Tensor) -> &'a [usize] {
        &t.shape
    }
    fn reshape(&self, t: &Tensor, shape: &[usize]) -> Result<Tensor> {
        t.reshape(shape)
    }
    fn slice_batch(&mut self, t: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        let per = t.numel() / t.shape[0];
        if start + len > t.shape[0] {
            bail!("slice {start}..{} of a batch of {}", start + len, t.shape[0]);
        }
        let mut shape = t.shape.clone();
        shape[0] = len;
        let out = Tensor::zeros_as(self.gpu, &shape, t.dtype)?;
        self.rec.copy_region(t, start * per, &out, 0, len * per)?;
        Ok(out)
    }
    fn concat_batch(&mut self, parts: &[Tensor]) -> Result<Tensor> {
        let mut shape = parts[0].shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        let out = Tensor::zeros_as(self.gpu, &shape, parts[0].dtype)?;
        let mut at = 0;
        for p in parts {
            self.rec.copy_region(p, 0, &out, at, p.numel())?;
            at += p.numel();
        }
        Ok(out)
    }
    fn conv2d(&mut self, s: &Conv2d, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        conv2d::forward(&mut self.rec, s, Path::Auto, x, w, b)
    }
    fn conv2d_backward(&mut self, s: &Conv2d, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<Grads> {
        conv2d::backward(&mut self.rec, s, Path::Auto, x, w, dy)
    }
    fn conv2d_backward_params(
        &mut self,
        s: &Conv2d,
        x: &Tensor,
        _w: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>)> {
        conv2d::backward_params(&mut self.rec, s, Path::Auto, x, dy)
    }
    fn batchnorm(&mut self, s: &BatchNorm, p: &BnParams, x: &Tensor, train: bool) -> Result<(Tensor, BnSaved)> {
        batchnorm::forward(&mut self.rec, s, p, x, train)
    }
    fn batchnorm_backward(
        &mut self,
        s: &BatchNorm,
        p: &BnParams,
        x: &Tensor,
        saved: &BnSaved,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        batchnorm::backward(&mut self.rec, s, p, x, saved, dy)
    }
    fn submit_recorded(&mut self) {
        self.flush();
    }
    fn plan_memory(&mut self, on: bool) {
        self.gpu.pool.plan_by_liveness(on);
    }
    fn maxpool(&mut self, s: &MaxPool, x: &Tensor) -> Result<Tensor> {
        maxpool::forward(&mut self.rec, s, x)
    }
    fn maxpool_backward(&mut self, s: &MaxPool, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        maxpool::backward(&mut self.rec, s, x, dy)
    }
    fn area_resize(&mut self, s: &AreaResize, img: &Tensor, rects: &[Rect]) -> Result<Tensor> {
        resample::forward(&mut self.rec, s, img, rects)
    }
    fn bn_act(
        &mut self,
        s: &BatchNorm,
        p: &BnParams,
        x: &Tensor,
        slope: Option<&Tensor>,
        skip: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, BnSaved)> {
        if train {
            bn_act::forward(&mut self.rec, s, p, x, slope, skip)
        } else {
            // Eval mode is element-wise: the composed kernels spread it over
            // every element instead of one workgroup per channel.
            super::backend::composed_bn_act(self, s, p, x, slope, skip, false)
        }
    }
    fn bn_act_backward(
        &mut self,
        s: &BatchNorm,
        p: &BnParams,
        x: &Tensor,
        saved: &BnSaved,
        slope: Option<&Tensor>,
        dy: &Tensor,
    ) -> Result<BnActGrads<Tensor>> {
        bn_act::backward(&mut self.rec, s, p, x, saved, slope, dy)
    }
    fn prelu(&mut self, x: &Tensor, slope: &Tensor) -> Result<Tensor> {
        activation::prelu_forward(&mut self.rec, x, slope)
    }
    fn prelu_backward(&mut self, x: &Tensor, slope: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        activation::prelu_backward(&mut self.rec, x, slope, dy)
    }
    fn act(&mut self, a: Act, x: &Tensor) -> Result<Tensor> {
        activation::forward(&mut self.rec, a, x)
    }
    fn act_backward(&mut self, a: Act, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        activation::backward(&mut self.rec, a, x, dy)
    }
    fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        residual::add(&mut self.rec, a, b)
    }
    fn accumulate(&mut self, acc: &Tensor, g: &Tensor) -> Result<()> {
        residual::accumulate(&mut self.rec, acc, g)
    }
    fn conv2d_with(
        &mut self,
        s: &Conv2d,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        e: &Epilogue<Tensor>,
    ) -> Result<Tensor> {
        conv2d::forward_with(&mut self.rec, s, Path::Auto, x, w, b, e)
    }
    fn linear_with(
        &mut self,
        s: &Linear,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        e: &Epilogue<Tensor>,
    ) -> Result<Tensor> {
        linear::forward_with(&mut self.rec, s, x, w, b, e)
    }
    fn linear(&mut self, s: &Linear, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        linear::forward(&mut self.rec, s, x, w, b)
    }
    fn linear_backward(&mut self, s: &Linear, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<LinearGrads> {
        linear::backward(&mut self.rec, s, x, w, dy)
    }
    fn l2norm(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(l2norm::forward(&mut self.rec, x)?.y)
    }
    fn arcface(&mut self, a: &ArcFace, e: &Tensor, w: &Tensor, labels: &Tensor) -> Result<(Tensor, ArcSaved)> {
        arcface::forward(&mut self.rec, a, e, w, labels)
    }
    fn arcface_backward(
        &mut self,
        a: &ArcFace,
        c: &ArcSaved,
        labels: &Tensor,
        dl: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        arcface::backward(&mut self.rec, a, c, labels, dl)
    }
    fn cross_entropy(&mut self, logits: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
        softmax_xent::forward(&mut self.rec, logits, labels)
    }
    fn cross_entropy_backward(&mut self, probs: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let upstream = self.loss_scale.as_ref().map_or(&self.one, LossScale::scale).clone();
        softmax_xent::backward(&mut self.rec, probs, labels, &upstream)
    }
    fn softmax(&mut self, logits: &Tensor) -> Result<Tensor> {
        softmax_xent::softmax(&mut self.rec, logits)
    }
    /// In mixed precision this is the step's one update of every trained
    /// parameter (`pack` always packs here), as the overflow test needs.
    fn sgd(&mut self, h: &Sgd, param: &Tensor, grad: &Tensor, velocity: &Tensor) -> Result<()> {
        match &self.loss_scale {
            Some(ls) => sgd::scaled_step(&mut self.rec, h, param, grad, velocity, ls),
            None => sgd::step(&mut self.rec, h, param, grad, velocity),
        }
    }
    fn zeros(&mut self, shape: &[usize]) -> Result<Tensor> {
        Tensor::zeros(self.gpu, shape)
    }
    fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        self.rec.copy(src, dst)
    }
    /// Each part starts at the adapter's storage-binding alignment, so every
    /// view binds on its own; the gaps are zeros.
    fn pack(&mut self, parts: &[&Tensor]) -> Result<Option<Packing<Tensor>>> {
        let align = (self.gpu.limits.min_storage_buffer_offset_alignment as usize / 4).max(1);
        let mut at = Vec::with_capacity(parts.len());
        let mut total = 0;
        for p in parts {
            at.push(total);
            total += p.numel().div_ceil(align) * align;
        }
        let packed = Tensor::zeros(self.gpu, &[total.max(1)])?;
        let mut views = Vec::with_capacity(parts.len());
        for (p, &a) in parts.iter().zip(&at) {
            let v = packed.view(self.gpu, a, &p.shape)?;
            self.rec.copy(p, &v)?;
            views.push(v);
        }
        Ok(Some((packed, views)))
    }
    fn holds(&self, packed: &Tensor, view: &Tensor) -> bool {
        packed.holds(view)
    }
    fn max_binding_bytes(&self) -> u64 {
        self.binding_limit
    }
}
