//! Half-precision storage: the f16 variant of a shader, derived from its f32
//! source rather than written twice. The chosen storage bindings hold f16
//! (`array<f16>`, `array<vec4<f16>>`); every load from them is widened to
//! f32 where it is read and every store narrowed where it is written, so
//! all arithmetic, accumulators and partial sums stay f32 and each kernel
//! keeps one source. Which bindings are f16 is decided per dispatch, by the
//! tensors bound there (`Kernel::half`).
//!
//! The rewrite works on the WGSL text with the positions naga's parser
//! records: the f32 module is parsed and validated, each load rooted at a
//! chosen binding gets its span wrapped in `f32(..)` / `vec4<f32>(..)`, each
//! store's right-hand side in `f16(..)` / `vec4<f16>(..)`, the declarations
//! change type, and the result is validated again (with f16) before any
//! device sees it, so a construct the rewrite does not handle is an error
//! here and in the tests, never a wrong kernel.

use anyhow::{anyhow, bail, Context, Result};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{Block, Expression, Function, Handle, Module, Scalar, ScalarKind, Statement, TypeInner};

/// The bindings (bit i: `@binding(i)`) to hold f16, as a mask.
pub type HalfMask = u32;

fn validator(caps: Capabilities) -> Validator {
    Validator::new(ValidationFlags::all(), caps)
}

/// Every capability our shaders may use; f16 only for the rewritten source.
fn caps(f16: bool) -> Capabilities {
    let base = Capabilities::SUBGROUP | Capabilities::SUBGROUP_BARRIER;
    if f16 {
        base | Capabilities::SHADER_FLOAT16
    } else {
        base
    }
}

/// The WGSL of `source` with the storage bindings in `mask` holding f16.
pub fn f16_variant(source: &str, mask: HalfMask) -> Result<String> {
    if mask == 0 {
        return Ok(source.to_owned());
    }
    let module = naga::front::wgsl::parse_str(source).map_err(|e| anyhow!("{}", e.emit_to_string(source)))?;
    let info = validator(caps(false)).validate(&module).map_err(|e| anyhow!("{e:?}"))?;
    let mut targets = Vec::new();
    for (h, g) in module.global_variables.iter() {
        let Some(b) = g.binding.as_ref() else { continue };
        if b.binding >= 32 || mask & (1 << b.binding) == 0 {
            continue;
        }
        if !matches!(g.space, naga::AddressSpace::Storage { .. }) || float_array(&module, g.ty).is_none() {
            bail!("@binding({}) `{}` is not a storage array of f32 or vecN<f32>", b.binding, name(&g.name));
        }
        targets.push(h);
    }
    let mut edits = Edits::default();
    let funcs = module.functions.iter().map(|(h, f)| (f, &info[h]));
    let entries = module.entry_points.iter().enumerate().map(|(i, e)| (&e.function, info.get_entry_point(i)));
    for (f, fi) in funcs.chain(entries) {
        let is_target = |e: Handle<Expression>| root_global(f, e).is_some_and(|g| targets.contains(&g));
        for (h, e) in f.expressions.iter() {
            if let Expression::Load { pointer } = *e {
                if is_target(pointer) {
                    let ty = type_name(fi[h].ty.inner_with(&module.types), "f32")?;
                    edits.wrap(span(f.expressions.get_span(h))?, ty);
                }
            }
        }
        stores(&f.body, fi, &module, &is_target, source, &mut edits)?;
    }
    let mut out = edits.apply(source);
    for &g in &targets {
        out = retype(&out, &module, g)?;
    }
    let out = format!("enable f16;\n{out}");
    let checked = naga::front::wgsl::parse_str(&out).map_err(|e| anyhow!("{}", e.emit_to_string(&out)))?;
    validator(caps(true)).validate(&checked).map_err(|e| anyhow!("the f16 variant does not validate: {e:?}"))?;
    Ok(out)
}

fn name(n: &Option<String>) -> &str {
    n.as_deref().unwrap_or("?")
}

fn span(s: naga::Span) -> Result<std::ops::Range<usize>> {
    s.to_range().context("naga recorded no source position")
}

/// The element type of a storage array of f32 or vecN<f32>: "f32" or "vecN<f32>".
fn float_array(module: &Module, ty: Handle<naga::Type>) -> Option<String> {
    let TypeInner::Array { base, .. } = module.types[ty].inner else { return None };
    type_name(&module.types[base].inner, "f32").ok()
}

/// `f32`, `vec4<f32>` (or with `scalar` f16) for a float scalar or vector.
fn type_name(t: &TypeInner, scalar: &str) -> Result<String> {
    match *t {
        TypeInner::Scalar(Scalar { kind: ScalarKind::Float, width: 4 }) => Ok(scalar.to_owned()),
        TypeInner::Vector { size, scalar: Scalar { kind: ScalarKind::Float, width: 4 } } => {
            Ok(format!("vec{}<{scalar}>", size as u8))
        }
        ref other => bail!("a load or store of {other:?} from a half binding"),
    }
}

/// The global variable a pointer expression is rooted at, if any.
fn root_global(f: &Function, mut e: Handle<Expression>) -> Option<Handle<naga::GlobalVariable>> {
    loop {
        match f.expressions[e] {
            Expression::Access { base, .. } | Expression::AccessIndex { base, .. } => e = base,
            Expression::GlobalVariable(g) => return Some(g),
            _ => return None,
        }
    }
}

/// Wraps the right-hand side of every store into a half binding. The value
/// expression's own span may lie elsewhere (a `let` bound earlier), so the
/// statement's text is split at its assignment instead.
fn stores(
    block: &Block,
    fi: &naga::valid::FunctionInfo,
    module: &Module,
    is_target: &dyn Fn(Handle<Expression>) -> bool,
    source: &str,
    edits: &mut Edits,
) -> Result<()> {
    for (s, sp) in block.span_iter() {
        match s {
            Statement::Store { pointer, value } if is_target(*pointer) => {
                let ty = type_name(fi[*value].ty.inner_with(&module.types), "f16")?;
                let r = span(*sp)?;
                let text = &source[r.clone()];
                let eq = assignment(text).with_context(|| format!("a store into a half binding: `{text}`"))?;
                let rhs = text[eq + 1..].trim_end().trim_end_matches(';').trim_end();
                let start = r.start + eq + 1 + (rhs.len() - rhs.trim_start().len());
                let end = r.start + eq + 1 + rhs.len();
                edits.wrap(start..end, ty);
            }
            Statement::Block(b) => stores(b, fi, module, is_target, source, edits)?,
            Statement::If { accept, reject, .. } => {
                stores(accept, fi, module, is_target, source, edits)?;
                stores(reject, fi, module, is_target, source, edits)?;
            }
            Statement::Loop { body, continuing, .. } => {
                stores(body, fi, module, is_target, source, edits)?;
                stores(continuing, fi, module, is_target, source, edits)?;
            }
            Statement::Switch { cases, .. } => {
                for c in cases {
                    stores(&c.body, fi, module, is_target, source, edits)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The byte offset of a plain `=` at bracket depth 0 (not `==`, `<=`, ...,
/// and not a compound `+=`, which the rewrite refuses).
fn assignment(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut depth = 0i32;
    for i in 0..b.len() {
        match b[i] {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b'=' if depth == 0 => {
                let before = if i > 0 { b[i - 1] } else { b' ' };
                let after = b.get(i + 1).copied().unwrap_or(b' ');
                let compared_or_compound = after == b'=' || b"=<>!+-*/%&|^".contains(&before);
                return (!compared_or_compound).then_some(i);
            }
            _ => {}
        }
    }
    None
}

/// The declaration of `g` with f16 elements.
fn retype(source: &str, module: &Module, g: Handle<naga::GlobalVariable>) -> Result<String> {
    let var = &module.global_variables[g];
    let elem = float_array(module, var.ty).expect("checked");
    let binding = var.binding.as_ref().expect("checked").binding;
    let decl = format!("@binding({binding}) var");
    let at = source.find(&decl).with_context(|| format!("no `{decl}` declaration"))?;
    let line_end = source[at..].find(';').map(|e| at + e).context("an unterminated declaration")?;
    let line = &source[at..line_end];
    let old = format!("array<{elem}>");
    if line.matches(&old).count() != 1 {
        bail!("`{line}`: expected one `{old}`");
    }
    let new = line.replace(&old, &format!("array<{}>", elem.replace("f32", "f16")));
    Ok(format!("{}{new}{}", &source[..at], &source[line_end..]))
}

/// Insertions around source ranges, applied outermost first at a shared
/// start and innermost first at a shared end; of two wraps of one range
/// (`y[i] = x[j]`, both half) the store's narrowing is the outer.
#[derive(Default)]
struct Edits(Vec<(std::ops::Range<usize>, String)>);

impl Edits {
    fn wrap(&mut self, r: std::ops::Range<usize>, ty: String) {
        if !self.0.iter().any(|(s, t)| *s == r && *t == ty) {
            self.0.push((r, ty));
        }
    }

    fn apply(&self, source: &str) -> String {
        // (position, order, text): closes before opens at one position,
        // inner closes first, outer opens first.
        let mut marks: Vec<(usize, (u8, isize, u8), String)> = Vec::new();
        for (r, ty) in &self.0 {
            let len = (r.end - r.start) as isize;
            let narrowing = u8::from(ty.contains("f16"));
            marks.push((r.start, (1, -len, 1 - narrowing), format!("{ty}(")));
            marks.push((r.end, (0, len, narrowing), ")".to_owned()));
        }
        marks.sort_by_key(|m| (m.0, m.1));
        let mut out = String::with_capacity(source.len() + marks.len() * 8);
        let mut at = 0;
        for (pos, _, text) in marks {
            out.push_str(&source[at..pos]);
            out.push_str(&text);
            at = pos;
        }
        out.push_str(&source[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Shader;

    /// Every float storage array of a shader, as a mask, but the loss
    /// tally (`softmax_xent.wgsl`, added to across steps with `+=`: f32 always).
    fn all_float_bindings(source: &str) -> HalfMask {
        let module = naga::front::wgsl::parse_str(source).unwrap();
        module
            .global_variables
            .iter()
            .filter(|(_, g)| matches!(g.space, naga::AddressSpace::Storage { .. }))
            .filter(|(_, g)| float_array(&module, g.ty).is_some() && g.name.as_deref() != Some("tally"))
            .filter_map(|(_, g)| g.binding.as_ref().map(|b| 1 << b.binding))
            .fold(0, |m, b| m | b)
    }

    #[test]
    fn every_shader_has_a_valid_f16_variant_with_all_its_float_bindings_half() {
        for s in Shader::ALL {
            let src = s.composed();
            let mask = all_float_bindings(&src);
            assert_ne!(mask, 0, "{}", s.name());
            let out = f16_variant(&src, mask).unwrap_or_else(|e| panic!("{}: {e:#}", s.name()));
            assert!(out.contains("array<f16>") || out.contains("array<vec4<f16>>"), "{}", s.name());
        }
    }

    #[test]
    fn loads_widen_and_stores_narrow() {
        let src = "@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;\n\
                   @group(0) @binding(2) var<storage, read_write> y: array<f32>;\n\
                   @compute @workgroup_size(1) fn main() { let k = x[0] * 2.0; y[1] = k.x + y[0]; }";
        let out = f16_variant(src, 0b110).unwrap();
        assert!(out.contains("x: array<vec4<f16>>") && out.contains("y: array<f16>"), "{out}");
        assert!(out.contains("vec4<f32>(x[0]) * 2.0"), "{out}");
        assert!(out.contains("y[1] = f16(k.x + f32(y[0]))"), "{out}");
        assert_eq!(f16_variant(src, 0).unwrap(), src);
    }

    #[test]
    fn a_compound_store_into_a_half_binding_is_refused() {
        let src = "@group(0) @binding(1) var<storage, read_write> y: array<f32>;\n\
                   @compute @workgroup_size(1) fn main() { y[0] += 1.0; }";
        let err = f16_variant(src, 0b10).unwrap_err().to_string();
        assert!(err.contains("store into a half binding"), "{err}");
    }
}
