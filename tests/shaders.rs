//! Every shader, as compiled (common.wgsl prepended), parses and validates
//! with naga, independently of any driver.

use arcface::gpu::params::layout;
use arcface::gpu::{Params, Shader, Word};

#[test]
fn every_shader_parses_and_validates() {
    for s in Shader::ALL {
        let src = s.composed();
        let module =
            naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {}", s.name(), e.emit_to_string(&src)));
        let caps = if s.needs_subgroups() {
            naga::valid::Capabilities::SUBGROUP
        } else {
            naga::valid::Capabilities::default()
        };
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", s.name(), e.emit_to_string(&src)));
        assert!(!module.entry_points.is_empty(), "{} has no entry point", s.name());
    }
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let registered: Vec<&str> = Shader::ALL.iter().map(|s| s.name()).collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "common.wgsl" {
            assert!(registered.contains(&name.as_str()), "shaders/{name} is not in Shader::ALL");
        }
    }
}

#[test]
fn every_kernel_module_has_its_shader_and_every_shader_its_module() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Kernel modules: files and folders of src/kernels but for the shared
    // ones (the epilogue is code of the convolution and product shaders).
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(root.join("src/kernels")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let stem = name.trim_end_matches(".rs").to_string();
        if !["mod", "check", "gradcheck", "epilogue"].contains(&stem.as_str()) {
            modules.push(stem);
        }
    }
    for m in &modules {
        assert!(root.join(format!("shaders/{m}.wgsl")).is_file(), "kernel module `{m}` has no shaders/{m}.wgsl");
    }
    // A variant's file is named after its module: <module>_<variant>.wgsl.
    for s in Shader::ALL {
        let stem = s.name().trim_end_matches(".wgsl");
        let owned = |m: &String| stem == m || stem.strip_prefix(m.as_str()).is_some_and(|v| v.starts_with('_'));
        assert!(modules.iter().any(owned), "shaders/{} belongs to no kernel module", s.name());
    }
}

#[test]
fn every_shader_has_a_params_struct_of_u32_and_f32_words() {
    for s in Shader::ALL {
        let fields = layout(s).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!fields.is_empty(), "{}: empty Params", s.name());
    }
    assert_eq!(
        layout(Shader::Sgd).unwrap(),
        [
            ("n", Word::U32),
            ("lr", Word::F32),
            ("momentum", Word::F32),
            ("weight_decay", Word::F32),
            ("growth_interval", Word::F32)
        ]
        .map(|(n, w)| (n.to_string(), w))
    );
}

#[test]
fn parameters_that_differ_from_the_wgsl_struct_are_refused() {
    let good = Params::new().u("n", 4).f("lr", 0.1).f("momentum", 0.9).f("weight_decay", 0.0).f("growth_interval", 1.0);
    good.check(Shader::Sgd, "step").unwrap();
    let swapped =
        Params::new().u("n", 4).f("momentum", 0.9).f("lr", 0.1).f("weight_decay", 0.0).f("growth_interval", 1.0);
    let missing = Params::new().u("n", 4).f("lr", 0.1).f("momentum", 0.9).f("growth_interval", 1.0);
    let wrong_type =
        Params::new().f("n", 4.0).f("lr", 0.1).f("momentum", 0.9).f("weight_decay", 0.0).f("growth_interval", 1.0);
    for (what, p) in [("swapped", swapped), ("missing", missing), ("wrong type", wrong_type)] {
        let e = format!("{:#}", p.check(Shader::Sgd, "step").err().unwrap_or_else(|| panic!("{what}: accepted")));
        assert!(e.contains("sgd.wgsl::step") && e.contains("weight_decay: f32"), "{what}: {e}");
    }
}
