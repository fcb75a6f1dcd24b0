//! The layering of `src/` (ARCHITECTURE.md): every file belongs to the layer
//! of its top-level module, and every path it names (`crate::...`,
//! `super::...`, `arcface::...` in the binary) must lead to its own layer or
//! a lower one. Inside a layer, the modules must not import each other in a
//! cycle. The table below is the one statement of the layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. Modules on one row are siblings: neither may use the other.
const LAYERS: &[&[&str]] = &[
    &["gpu", "plot", "progress"],
    &["kernels"],
    &["nn"],
    &["data"],
    &["models"],
    &["io"],
    &["detect"],
    &["pipeline", "recognize"],
    &["serve", "web"],
    &["cli"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

/// A source file: its path under `src/` and its text.
struct Source {
    path: String,
    text: String,
}

/// The module path of a file: `kernels/conv2d/mod.rs` -> [kernels, conv2d].
fn module_of(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = path.trim_end_matches(".rs").split('/').map(String::from).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The text without comments, strings and char literals (so that prose and
/// messages that mention `crate::` do not count).
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            while i + 1 < c.len() && !(c[i] == '*' && c[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c[i] == 'r'
            && (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#'))
            && !ident(c.get(i.wrapping_sub(1)))
        {
            // Raw string r"..." / r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            while j < c.len() && !(c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#'))) {
                j += 1;
            }
            i = j + 1 + hashes;
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i += 3; // 'x'
        } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
            i += 2;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1; // '\n', '\''
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// Every path after `root::` in `code`, expanded through `{...}` groups,
/// as its segments: `crate::io::{checkpoint, tensorfile::Loaded}` gives
/// [io, checkpoint] and [io, tensorfile, Loaded].
fn paths_after(code: &str, root: &str) -> Vec<Vec<String>> {
    let c: Vec<char> = code.chars().collect();
    let key: Vec<char> = format!("{root}::").chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + key.len() <= c.len() {
        if c[i..i + key.len()] == key[..] && !ident(c.get(i.wrapping_sub(1))) && c.get(i.wrapping_sub(1)) != Some(&':')
        {
            let mut j = i + key.len();
            parse_tree(&c, &mut j, Vec::new(), &mut out);
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Parses `a::b::{c, d::e}` from `c[*j..]`, appending each leaf path.
fn parse_tree(c: &[char], j: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let skip_ws = |j: &mut usize| {
        while *j < c.len() && c[*j].is_whitespace() {
            *j += 1;
        }
    };
    let mut path = prefix;
    loop {
        skip_ws(j);
        if c.get(*j) == Some(&'{') {
            *j += 1;
            loop {
                skip_ws(j);
                if c.get(*j) == Some(&'}') || *j >= c.len() {
                    *j += 1;
                    return;
                }
                parse_tree(c, j, path.clone(), out);
                skip_ws(j);
                if c.get(*j) == Some(&',') {
                    *j += 1;
                }
            }
        }
        let start = *j;
        while ident(c.get(*j)) {
            *j += 1;
        }
        if start == *j {
            if c.get(*j) == Some(&'*') {
                *j += 1;
            }
            out.push(path);
            return;
        }
        path.push(c[start..*j].iter().collect());
        if c.get(*j) == Some(&':') && c.get(*j + 1) == Some(&':') {
            *j += 2;
        } else {
            out.push(path);
            return;
        }
    }
}

/// The absolute module paths (from the crate root) that a file names.
fn imports(file: &Source) -> Vec<Vec<String>> {
    let code = code_only(&file.text);
    let module = module_of(&file.path);
    let mut out = paths_after(&code, "crate");
    if file.path == "main.rs" {
        out.extend(paths_after(&code, "arcface"));
    }
    for p in paths_after(&code, "super") {
        let mut abs = module.clone();
        abs.pop();
        let mut rest = p.into_iter().peekable();
        while rest.peek().map(String::as_str) == Some("super") {
            rest.next();
            abs.pop();
        }
        abs.extend(rest);
        out.push(abs);
    }
    out.retain(|p| !p.is_empty() && p[0] != "self");
    out
}

/// Whether `src/<layer>/<name>` is a module (a file or a folder).
fn is_module(files: &[Source], layer: &str, name: &str) -> bool {
    files.iter().any(|f| f.path == format!("{layer}/{name}.rs") || f.path.starts_with(&format!("{layer}/{name}/")))
}

/// Upward or sideways imports, and cycles between the modules of a layer.
fn violations(files: &[Source]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let module = module_of(&f.path);
        let own = if f.path == "main.rs" { "cli".to_string() } else { module.first().cloned().unwrap_or_default() };
        let Some(own_rank) = rank(&own) else {
            if !module.is_empty() {
                bad.push(format!("src/{}: module `{own}` is in no layer of tests/layers.rs", f.path));
            }
            continue;
        };
        for p in imports(f) {
            let target = &p[0];
            match rank(target) {
                None => bad.push(format!("src/{}: `{}` names no layer", f.path, p.join("::"))),
                Some(r) if target != &own && r >= own_rank => bad.push(format!(
                    "src/{}: `{}` imports from layer `{target}`, which is not below `{own}`",
                    f.path,
                    p.join("::")
                )),
                _ => {}
            }
            if target == &own && module.len() >= 2 && p.len() >= 2 && p[1] != module[1] && is_module(files, &own, &p[1])
            {
                edges.entry((own.clone(), module[1].clone())).or_default().insert(p[1].clone());
            }
        }
    }
    for (layer, from) in edges.keys() {
        if let Some(cycle) = cycle_from(&edges, layer, from) {
            bad.push(format!("import cycle in `{layer}`: {}", cycle.join(" -> ")));
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

/// A cycle through `start` in the layer's module graph, if there is one.
fn cycle_from(edges: &BTreeMap<(String, String), BTreeSet<String>>, layer: &str, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap().clone();
        for next in edges.get(&(layer.to_string(), last)).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push(p);
            }
        }
    }
    None
}

fn read_src() -> Vec<Source> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<Source>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let path = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.push(Source { path, text: std::fs::read_to_string(&p).unwrap() });
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

#[test]
fn src_only_imports_downwards_and_without_cycles() {
    let files = read_src();
    assert!(files.len() > 50, "read only {} files", files.len());
    let bad = violations(&files);
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

#[test]
fn every_top_level_module_is_in_a_layer_and_every_layer_exists() {
    let files = read_src();
    let tops: BTreeSet<String> =
        files.iter().map(|f| module_of(&f.path)).filter(|m| !m.is_empty()).map(|m| m[0].clone()).collect();
    let listed: BTreeSet<String> = LAYERS.iter().flat_map(|r| r.iter().map(|s| s.to_string())).collect();
    assert_eq!(tops, listed, "the folders of src/ and the layer table differ");
}

fn synthetic(files: &[(&str, &str)]) -> Vec<Source> {
    let mut v: Vec<Source> = files.iter().map(|(p, t)| Source { path: p.to_string(), text: t.to_string() }).collect();
    v.push(Source { path: "lib.rs".into(), text: "pub mod gpu;".into() });
    v
}

#[test]
fn an_upward_import_is_caught_in_every_form() {
    for text in [
        "use crate::models::Net;",
        "use crate::{gpu::Gpu, models::Net};",
        "fn f() { let n = crate::models::Net::init(); }",
        "use crate::kernels::{check, super_secret::{x, y}};",
    ] {
        let bad = violations(&synthetic(&[("gpu/tensor.rs", text)]));
        assert!(!bad.is_empty(), "{text}: not caught");
        assert!(bad.iter().all(|b| b.contains("src/gpu/tensor.rs") && b.contains("not below `gpu`")), "{bad:?}");
    }
    let sideways = violations(&synthetic(&[("pipeline/train.rs", "use crate::recognize::session::Session;")]));
    assert_eq!(sideways.len(), 1, "siblings must not import each other: {sideways:?}");
    let via_super = violations(&synthetic(&[("gpu/mod.rs", "use super::serve::x;")]));
    assert_eq!(via_super.len(), 1, "{via_super:?}");
    let main = violations(&synthetic(&[("main.rs", "fn main() { arcface::cli::main(); }"), ("cli/mod.rs", "")]));
    assert!(main.is_empty(), "the binary may use the top layer: {main:?}");
}

#[test]
fn comments_and_strings_do_not_count_and_downward_imports_pass() {
    let text = "//! see crate::serve\n/// crate::cli\nconst S: &str = \"crate::serve::x\";\nuse crate::gpu::Gpu;\n";
    assert!(violations(&synthetic(&[("models/net.rs", text)])).is_empty());
}

#[test]
fn a_cycle_between_modules_of_a_layer_is_caught() {
    let files = synthetic(&[
        ("pipeline/train/mod.rs", "use crate::pipeline::report::EpochMetrics;"),
        ("pipeline/report.rs", "use super::train::Config;"),
        ("pipeline/mod.rs", "pub mod train; pub mod report;"),
    ]);
    let bad = violations(&files);
    assert!(bad.iter().any(|b| b.contains("import cycle in `pipeline`")), "{bad:?}");
}
