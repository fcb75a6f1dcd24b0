//! The `arcface` command line (`arcface::cli`).

fn main() -> std::process::ExitCode {
    arcface::cli::main()
}
