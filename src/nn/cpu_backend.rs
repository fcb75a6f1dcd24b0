//! `Backend` on the CPU reference kernels (f64), for checking a whole GPU
//! training step against the same step computed by the references.

use super::Backend;
use crate::kernels::activation::{self, Act};
use crate::kernels::arcface::{self, ArcFace};
use crate::kernels::batchnorm::{self, BatchNorm, BnParams, BnSaved};
use crate::kernels::conv2d::{self, Conv2d, Grads};
use crate::kernels::linear::{self, Linear, LinearGrads};
use crate::kernels::maxpool::{self, MaxPool};
use crate::kernels::resample::{self, AreaResize, Rect};
use crate::kernels::sgd::{self, Sgd};
use crate::kernels::{l2norm, residual, softmax_xent};
use anyhow::{bail, Result};
use std::cell::RefCell;
use std::rc::Rc;

/// f64 values with a shape; clones share storage (in-place updates of
/// running statistics and parameters are seen by every holder, as on the GPU).
#[derive(Clone, Debug)]
pub struct CpuTensor {
    data: Rc<RefCell<Vec<f64>>>,
    pub shape: Vec<usize>,
}

impl CpuTensor {
    pub fn new(data: Vec<f64>, shape: &[usize]) -> CpuTensor {
        assert_eq!(data.len(), shape.iter().product::<usize>(), "data does not fill shape {shape:?}");
        CpuTensor { data: Rc::new(RefCell::new(data)), shape: shape.to_vec() }
    }
    pub fn values(&self) -> Vec<f64> {
        self.data.borrow().clone()
    }
    fn set(&self, v: Vec<f64>) {
        *self.data.borrow_mut() = v;
    }
    fn labels(&self) -> Vec<u32> {
        self.data.borrow().iter().map(|&v| v as u32).collect()
    }
}

#[derive(Default)]
pub struct CpuBackend;

fn new(v: Vec<f64>, shape: &[usize]) -> Result<CpuTensor> {
    Ok(CpuTensor::new(v, shape))
}

fn bn_layout(x: &CpuTensor) -> (usize, usize, usize) {
    (x.shape[0], x.shape[1], x.shape[2..].iter().product())
}

impl Backend for CpuBackend {
    type T = CpuTensor;
    /// The raw embeddings and class weights.
    type ArcCache = (CpuTensor, CpuTensor);

    fn upload(&mut self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        new(data.iter().map(|&v| v as f64).collect(), shape)
    }
    fn labels(&mut self, labels: &[u32]) -> Result<CpuTensor> {
        new(labels.iter().map(|&v| v as f64).collect(), &[labels.len()])
    }
    fn download(&mut self, t: &CpuTensor) -> Vec<f32> {
        t.data.borrow().iter().map(|&v| v as f32).collect()
    }
    fn download_async(&mut self, t: &CpuTensor) -> impl std::future::Future<Output = Vec<f32>> {
        std::future::ready(self.download(t))
    }
    fn download_all_async(&mut self, ts: &[CpuTensor]) -> impl std::future::Future<Output = Vec<Vec<f32>>> {
        std::future::ready(ts.iter().map(|t| self.download(t)).collect())
    }
    fn shape<'a>(&self, t: &'a CpuTensor) -> &'a [usize] {
        &t.shape
    }
    fn reshape(&self, t: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        if shape.iter().product::<usize>() != t.shape.iter().product::<usize>() {
            bail!("cannot reshape {:?} to {shape:?}", t.shape);
        }
        Ok(CpuTensor { data: t.data.clone(), shape: shape.to_vec() })
    }
    fn slice_batch(&mut self, t: &CpuTensor, start: usize, len: usize) -> Result<CpuTensor> {
        let per = t.shape[1..].iter().product::<usize>();
        let mut shape = t.shape.clone();
        shape[0] = len;
        new(t.data.borrow()[start * per..(start + len) * per].to_vec(), &shape)
    }
    fn concat_batch(&mut self, parts: &[CpuTensor]) -> Result<CpuTensor> {
        let mut shape = parts[0].shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        new(parts.iter().flat_map(|p| p.values()).collect(), &shape)
    }
    fn conv2d(&mut self, s: &Conv2d, x: &CpuTensor, w: &CpuTensor, b: Option<&CpuTensor>) -> Result<CpuTensor> {
        let bv = b.map(|b| b.values());
        new(conv2d::forward_ref(s, &x.values(), &w.values(), bv.as_deref()), &s.output_shape())
    }
    fn conv2d_backward(
        &mut self,
        s: &Conv2d,
        x: &CpuTensor,
        w: &CpuTensor,
        dy: &CpuTensor,
    ) -> Result<Grads<CpuTensor>> {
        let g = conv2d::backward_ref(s, &x.values(), &w.values(), &dy.values());
        Ok(Grads { dx: new(g.dx, &x.shape)?, dw: new(g.dw, &w.shape)?, db: g.db.map(|d| CpuTensor::new(d, &[s.cout])) })
    }
    fn batchnorm(
        &mut self,
        s: &BatchNorm,
        p: &BnParams<CpuTensor>,
        x: &CpuTensor,
        train: bool,
    ) -> Result<(CpuTensor, BnSaved<CpuTensor>)> {
        let xv = x.values();
        let (mean, var) = if train {
            let (mean, var) = batchnorm::stats_ref(s, &xv);
            let (mut rm, mut rv) = (p.running_mean.values(), p.running_var.values());
            batchnorm::running_update_ref(s, &mean, &var, &mut rm, &mut rv);
            p.running_mean.set(rm);
            p.running_var.set(rv);
            (mean, var)
        } else {
            (p.running_mean.values(), p.running_var.values())
        };
        let y = batchnorm::apply_ref(s, &xv, &mean, &var, &p.gamma.values(), &p.beta.values());
        Ok((new(y, &x.shape)?, BnSaved { mean: new(mean, &[s.c])?, var: new(var, &[s.c])?, train }))
    }
    fn batchnorm_backward(
        &mut self,
        s: &BatchNorm,
        p: &BnParams<CpuTensor>,
        x: &CpuTensor,
        saved: &BnSaved<CpuTensor>,
        dy: &CpuTensor,
    ) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        let (dx, dg, db) = batchnorm::backward_ref(
            s,
            &x.values(),
            &saved.mean.values(),
            &saved.var.values(),
            &p.gamma.values(),
            &dy.values(),
            saved.train,
        );
        Ok((new(dx, &x.shape)?, new(dg, &[s.c])?, new(db, &[s.c])?))
    }
    fn maxpool(&mut self, s: &MaxPool, x: &CpuTensor) -> Result<CpuTensor> {
        let (ho, wo) = s.out_hw();
        new(maxpool::forward_ref(s, &x.values()).0, &[s.n, s.c, ho, wo])
    }
    fn maxpool_backward(&mut self, s: &MaxPool, x: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        new(maxpool::backward_ref(s, &x.values(), &dy.values()), &x.shape)
    }
    fn area_resize(&mut self, s: &AreaResize, img: &CpuTensor, rects: &[Rect]) -> Result<CpuTensor> {
        s.validate(rects)?;
        new(resample::forward_ref(s, &img.values(), rects), &s.out_shape(rects.len()))
    }
    fn prelu(&mut self, x: &CpuTensor, slope: &CpuTensor) -> Result<CpuTensor> {
        let (_, c, m) = bn_layout(x);
        new(activation::prelu_ref(&x.values(), &slope.values(), c, m), &x.shape)
    }
    fn prelu_backward(&mut self, x: &CpuTensor, slope: &CpuTensor, dy: &CpuTensor) -> Result<(CpuTensor, CpuTensor)> {
        let (_, c, m) = bn_layout(x);
        let (dx, ds) = activation::prelu_backward_ref(&x.values(), &slope.values(), &dy.values(), c, m);
        Ok((new(dx, &x.shape)?, new(ds, &[c])?))
    }
    fn act(&mut self, a: Act, x: &CpuTensor) -> Result<CpuTensor> {
        new(activation::act_ref(a, &x.values()), &x.shape)
    }
    fn act_backward(&mut self, a: Act, x: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        new(activation::act_backward_ref(a, &x.values(), &dy.values()), &x.shape)
    }
    fn add(&mut self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        new(residual::add_ref(&a.values(), &b.values()), &a.shape)
    }
    fn accumulate(&mut self, acc: &CpuTensor, g: &CpuTensor) -> Result<()> {
        acc.set(residual::add_ref(&acc.values(), &g.values()));
        Ok(())
    }
    fn linear(&mut self, s: &Linear, x: &CpuTensor, w: &CpuTensor, b: Option<&CpuTensor>) -> Result<CpuTensor> {
        let bv = b.map(|b| b.values());
        new(linear::forward_ref(s, &x.values(), &w.values(), bv.as_deref()), &[s.n, s.out])
    }
    fn linear_backward(
        &mut self,
        s: &Linear,
        x: &CpuTensor,
        w: &CpuTensor,
        dy: &CpuTensor,
    ) -> Result<LinearGrads<CpuTensor>> {
        let (dx, dw, db) = linear::backward_ref(s, &x.values(), &w.values(), &dy.values());
        Ok(LinearGrads {
            dx: new(dx, &x.shape)?,
            dw: new(dw, &w.shape)?,
            db: s.bias.then(|| CpuTensor::new(db, &[s.out])),
        })
    }
    fn l2norm(&mut self, x: &CpuTensor) -> Result<CpuTensor> {
        new(l2norm::forward_ref(&x.values(), x.shape[1..].iter().product()), &x.shape)
    }
    fn arcface(
        &mut self,
        a: &ArcFace,
        e: &CpuTensor,
        w: &CpuTensor,
        labels: &CpuTensor,
    ) -> Result<(CpuTensor, (CpuTensor, CpuTensor))> {
        let logits = arcface::forward_ref(a, &e.values(), &w.values(), &labels.labels());
        Ok((new(logits, &[a.b, a.c])?, (e.clone(), w.clone())))
    }
    fn arcface_backward(
        &mut self,
        a: &ArcFace,
        cache: &(CpuTensor, CpuTensor),
        labels: &CpuTensor,
        dl: &CpuTensor,
    ) -> Result<(CpuTensor, CpuTensor)> {
        let (e, w) = cache;
        let (de, dw) = arcface::backward_ref(a, &e.values(), &w.values(), &labels.labels(), &dl.values());
        Ok((new(de, &e.shape)?, new(dw, &w.shape)?))
    }
    fn cross_entropy(&mut self, logits: &CpuTensor, labels: &CpuTensor) -> Result<(CpuTensor, CpuTensor)> {
        let c = logits.shape[1];
        let loss = softmax_xent::loss_ref(&logits.values(), &labels.labels(), c);
        Ok((new(vec![loss], &[1])?, new(softmax_xent::softmax_ref(&logits.values(), c), &logits.shape)?))
    }
    fn cross_entropy_backward(&mut self, probs: &CpuTensor, labels: &CpuTensor) -> Result<CpuTensor> {
        let g = softmax_xent::backward_from_probs_ref(&probs.values(), &labels.labels(), probs.shape[1], 1.0);
        new(g, &probs.shape)
    }
    fn softmax(&mut self, logits: &CpuTensor) -> Result<CpuTensor> {
        new(softmax_xent::softmax_ref(&logits.values(), logits.shape[1]), &logits.shape)
    }
    fn sgd(&mut self, h: &Sgd, param: &CpuTensor, grad: &CpuTensor, velocity: &CpuTensor) -> Result<()> {
        let (mut p, mut v) = (param.values(), velocity.values());
        sgd::step_ref(h, &mut p, &grad.values(), &mut v);
        param.set(p);
        velocity.set(v);
        Ok(())
    }
    fn zeros(&mut self, shape: &[usize]) -> Result<CpuTensor> {
        new(vec![0.0; shape.iter().product()], shape)
    }
    fn copy(&mut self, src: &CpuTensor, dst: &CpuTensor) -> Result<()> {
        if src.shape.iter().product::<usize>() != dst.shape.iter().product::<usize>() {
            bail!("copy from {:?} to {:?}: sizes differ", src.shape, dst.shape);
        }
        dst.set(src.values());
        Ok(())
    }
    fn max_binding_bytes(&self) -> u64 {
        u64::MAX
    }
}
