//! Every shader, as compiled (common.wgsl prepended), parses and validates
//! with naga, independently of any driver.

use arcface::gpu::Shader;

#[test]
fn every_shader_parses_and_validates() {
    for s in Shader::ALL {
        let src = s.composed();
        let module =
            naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {}", s.name(), e.emit_to_string(&src)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
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
