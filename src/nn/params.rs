//! Named parameters (PyTorch's names, so golden files and checkpoints map
//! one to one), their gradients and SGD velocities.

use super::Backend;
use crate::kernels::sgd::Sgd;
use anyhow::{bail, Result};
use std::collections::HashMap;

pub struct Param<T> {
    pub name: String,
    pub value: T,
    /// Learned (updated by SGD) or a buffer (BN running statistics).
    pub trainable: bool,
    pub grad: Option<T>,
    pub velocity: Option<T>,
}

pub struct ParamStore<T> {
    pub params: Vec<Param<T>>,
    index: HashMap<String, usize>,
    /// Where the backend packs: the learned values, their gradients and
    /// velocities each in one buffer, so one SGD dispatch updates them all.
    packed: Option<Packed<T>>,
}

/// The packed buffers, the parameters they hold (indices, in order) and the
/// views of the gradient buffer that each step's gradients are copied into.
struct Packed<T> {
    members: Vec<usize>,
    values: T,
    grads: T,
    velocities: T,
    grad_views: Vec<T>,
}

impl<T: Clone> Default for ParamStore<T> {
    fn default() -> Self {
        ParamStore { params: Vec::new(), index: HashMap::new(), packed: None }
    }
}

impl<T: Clone> ParamStore<T> {
    pub fn add(&mut self, name: &str, value: T, trainable: bool) {
        self.index.insert(name.to_string(), self.params.len());
        self.params.push(Param { name: name.to_string(), value, trainable, grad: None, velocity: None });
    }

    pub fn get(&self, name: &str) -> &T {
        match self.index.get(name) {
            Some(&i) => &self.params[i].value,
            None => panic!("no parameter `{name}`: the layer table and the store disagree"),
        }
    }

    /// Replaces a value (same name), keeping whether it is trainable.
    pub fn set(&mut self, name: &str, value: T) {
        let i = self.index[name];
        self.params[i].value = value;
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn grad(&self, name: &str) -> Option<&T> {
        self.index.get(name).and_then(|&i| self.params[i].grad.as_ref())
    }

    /// Sets the gradient, or adds to it when the batch was split into chunks.
    pub fn add_grad<B: Backend<T = T>>(&mut self, b: &mut B, name: &str, g: T) -> Result<()> {
        let Some(&i) = self.index.get(name) else { bail!("no parameter `{name}`") };
        match &self.params[i].grad {
            Some(acc) => b.accumulate(acc, &g),
            None => {
                self.params[i].grad = Some(g);
                Ok(())
            }
        }
    }

    /// One SGD step of the learned parameters for which `update` holds:
    /// in one multi-tensor dispatch where the backend packs parameters
    /// (after the first step: values and velocities then live in packed
    /// buffers, gradients are copied in), else one dispatch each.
    pub fn sgd_step<B: Backend<T = T>>(&mut self, b: &mut B, h: &Sgd, update: impl Fn(&str) -> bool) -> Result<()> {
        let members: Vec<usize> =
            (0..self.params.len()).filter(|&i| self.params[i].trainable && update(&self.params[i].name)).collect();
        for &i in &members {
            let p = &mut self.params[i];
            if p.grad.is_none() {
                bail!("no gradient for `{}`", p.name);
            }
            if p.velocity.is_none() {
                let shape = b.shape(&p.value).to_vec();
                p.velocity = Some(b.zeros(&shape)?);
            }
        }
        let repacked = !self.packed_for(b, &members);
        if repacked {
            self.packed = self.pack(b, &members)?;
        }
        match &self.packed {
            Some(k) => {
                // Packing copied this step's gradients already.
                if !repacked {
                    for (view, &i) in k.grad_views.iter().zip(&k.members) {
                        b.copy(self.params[i].grad.as_ref().expect("checked above"), view)?;
                    }
                }
                b.sgd(h, &k.values, &k.grads, &k.velocities)
            }
            None => {
                for &i in &members {
                    let p = &self.params[i];
                    let (g, v) = (p.grad.as_ref().expect("checked"), p.velocity.as_ref().expect("set"));
                    b.sgd(h, &p.value, g, v)?;
                }
                Ok(())
            }
        }
    }

    /// Whether the packed buffers still hold exactly `members`' values and
    /// velocities (a value replaced since, say by a checkpoint, is not).
    fn packed_for<B: Backend<T = T>>(&self, b: &B, members: &[usize]) -> bool {
        let Some(k) = &self.packed else { return false };
        k.members == members
            && members.iter().all(|&i| {
                let p = &self.params[i];
                b.holds(&k.values, &p.value) && p.velocity.as_ref().is_some_and(|v| b.holds(&k.velocities, v))
            })
    }

    /// Packs `members`' values, velocities and current gradients (None when
    /// the backend does not pack); values and velocities become views.
    fn pack<B: Backend<T = T>>(&mut self, b: &mut B, members: &[usize]) -> Result<Option<Packed<T>>> {
        let values: Vec<T> = members.iter().map(|&i| self.params[i].value.clone()).collect();
        let Some((packed_values, value_views)) = b.pack(&values.iter().collect::<Vec<_>>())? else {
            return Ok(None);
        };
        let velocities: Vec<T> = members.iter().map(|&i| self.params[i].velocity.clone().expect("set")).collect();
        let (packed_velocities, velocity_views) = b.pack(&velocities.iter().collect::<Vec<_>>())?.expect("packs");
        let grads: Vec<T> = members.iter().map(|&i| self.params[i].grad.clone().expect("checked")).collect();
        let (packed_grads, grad_views) = b.pack(&grads.iter().collect::<Vec<_>>())?.expect("packs");
        for ((&i, v), vel) in members.iter().zip(value_views).zip(velocity_views) {
            self.params[i].value = v;
            self.params[i].velocity = Some(vel);
        }
        Ok(Some(Packed {
            members: members.to_vec(),
            values: packed_values,
            grads: packed_grads,
            velocities: packed_velocities,
            grad_views,
        }))
    }

    pub fn zero_grads(&mut self) {
        for p in &mut self.params {
            p.grad = None;
        }
    }

    /// Number of learned values (running statistics not counted, as PyTorch's
    /// `sum(p.numel() for p in model.parameters())`).
    pub fn count_trainable<B: Backend<T = T>>(&self, b: &B) -> usize {
        self.params.iter().filter(|p| p.trainable).map(|p| b.shape(&p.value).iter().product::<usize>()).sum()
    }
}
