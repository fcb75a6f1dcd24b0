//! `cargo bench --bench kernels [-- --kernel NAME --batch 32 --repeats 5 --json]`:
//! every kernel family's forward and backward at MobileFaceNet / MiniNetwork
//! shapes, the same table from the same code as `arcface bench kernels`.

fn main() -> std::process::ExitCode {
    arcface::cli::bench_main("kernels")
}
