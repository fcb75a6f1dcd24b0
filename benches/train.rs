//! `cargo bench --bench train [-- --model mininet --input 32 --batch 32 --steps 2 --json]`:
//! whole training steps, as `arcface bench train`.

fn main() -> std::process::ExitCode {
    arcface::cli::bench_main("train")
}
