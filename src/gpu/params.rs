//! Kernel parameters: the words of a shader's uniform `Params` struct, each
//! written with the name of the WGSL field it fills. Every dispatch checks
//! the names and types, in order, against the struct reflected from the
//! shader (naga), so the Rust side and the WGSL side cannot drift apart.

use super::shaders::Shader;
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The type of one 32-bit word of a `Params` struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    U32,
    F32,
}

/// A `Params` struct's fields, in order: name and type.
pub type Layout = Vec<(String, Word)>;

/// The uniform words of a dispatch, named after the shader's `Params` fields.
#[derive(Default, Clone, Debug)]
pub struct Params {
    fields: Vec<(&'static str, Word)>,
    words: Vec<u32>,
}

impl Params {
    pub fn new() -> Params {
        Params::default()
    }

    pub fn u(mut self, name: &'static str, v: usize) -> Params {
        self.fields.push((name, Word::U32));
        self.words.push(u32::try_from(v).expect("kernel parameter over u32"));
        self
    }

    pub fn f(mut self, name: &'static str, v: f32) -> Params {
        self.fields.push((name, Word::F32));
        self.words.push(v.to_bits());
        self
    }

    /// Uniform structs are sized in multiples of 16 bytes.
    pub(crate) fn padded(&self) -> Vec<u32> {
        let mut w = self.words.clone();
        w.resize(w.len().div_ceil(4).max(1) * 4, 0);
        w
    }

    /// The same fields, in the same order and of the same types, as the
    /// shader's `Params` struct.
    pub fn check(&self, shader: Shader, entry: &str) -> Result<()> {
        let want = layout(shader)?;
        let got: Layout = self.fields.iter().map(|(n, w)| (n.to_string(), *w)).collect();
        if got != want {
            bail!(
                "kernel `{}::{entry}`: parameters {} do not match the shader's Params struct {}",
                shader.name(),
                describe(&got),
                describe(&want)
            );
        }
        Ok(())
    }
}

fn describe(fields: &[(String, Word)]) -> String {
    let f: Vec<String> =
        fields.iter().map(|(n, w)| format!("{n}: {}", if *w == Word::U32 { "u32" } else { "f32" })).collect();
    format!("{{ {} }}", f.join(", "))
}

/// The fields of `shader`'s uniform at `@group(0) @binding(0)`, reflected
/// once per shader.
pub fn layout(shader: Shader) -> Result<Layout> {
    static CACHE: OnceLock<Mutex<HashMap<Shader, Layout>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(l) = cache.lock().unwrap().get(&shader) {
        return Ok(l.clone());
    }
    let l = reflect(shader)?;
    cache.lock().unwrap().insert(shader, l.clone());
    Ok(l)
}

fn reflect(shader: Shader) -> Result<Layout> {
    let src = shader.composed();
    let module = match naga::front::wgsl::parse_str(&src) {
        Ok(m) => m,
        Err(e) => bail!("{}: {}", shader.name(), e.emit_to_string(&src)),
    };
    let uniform = module.global_variables.iter().map(|(_, g)| g).find(|g| {
        g.space == naga::AddressSpace::Uniform && g.binding.as_ref().is_some_and(|b| b.group == 0 && b.binding == 0)
    });
    let Some(uniform) = uniform else { bail!("{}: no uniform Params at @group(0) @binding(0)", shader.name()) };
    let naga::TypeInner::Struct { members, .. } = &module.types[uniform.ty].inner else {
        bail!("{}: the uniform at binding 0 is not a struct", shader.name())
    };
    members
        .iter()
        .map(|m| {
            let name = m.name.clone().unwrap_or_default();
            let word = match module.types[m.ty].inner {
                naga::TypeInner::Scalar(naga::Scalar { kind: naga::ScalarKind::Uint, width: 4 }) => Word::U32,
                naga::TypeInner::Scalar(naga::Scalar { kind: naga::ScalarKind::Float, width: 4 }) => Word::F32,
                _ => bail!("{}: Params field `{name}` is not a u32 or f32", shader.name()),
            };
            Ok((name, word))
        })
        .collect()
}
