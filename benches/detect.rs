//! `cargo bench --bench detect [-- --sizes 300,1350 --repeats 3 --json]`:
//! face detection at several photo sizes, as `arcface bench detect`.

fn main() -> std::process::ExitCode {
    arcface::cli::bench_main("detect")
}
