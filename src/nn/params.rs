//! Named parameters (PyTorch's names, so golden files and checkpoints map
//! one to one), their gradients and SGD velocities.

use super::Backend;
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
}

impl<T: Clone> Default for ParamStore<T> {
    fn default() -> Self {
        ParamStore { params: Vec::new(), index: HashMap::new() }
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
