//! The `arcface` command line: one module per command group, each owning
//! its flags and its printing; `args` holds the flag groups they share.
//! Exit status: 0 success; 1 on a runtime error, or when something checked
//! failed (a gradcheck row, a file, a diverged run); 2 on a usage error
//! (an unknown flag or a bad flag value, reported by clap).

pub mod args;
mod bench;
mod detect;
mod gradcheck;
mod info;
mod output;
mod recognize;
mod serve;
mod training;

use args::GpuArgs;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "arcface",
    version,
    about = "Train and run face-recognition networks on any Vulkan, Metal or DX12 GPU"
)]
struct Cli {
    #[command(flatten, next_help_heading = "Global options (every command)")]
    gpu: GpuArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(subcommand)]
    command: Command,
}

/// What one input may cost, for every command that reads files.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Global options (every command)")]
struct LimitArgs {
    /// Refuse photos of more pixels than this, from their header, before
    /// decoding (decompression bombs); the default is 40 megapixels
    #[arg(long, global = true, env = "ARCFACE_MAX_PIXELS", default_value_t = crate::data::photo::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Refuse photos and other input files (CSV, JSON) larger than this,
    /// before reading; default: the largest a photo under --max-pixels can
    /// be (8 bytes a pixel: 321 MB for 40 megapixels)
    #[arg(long, global = true, env = "ARCFACE_MAX_FILE_MB", value_parser = megabytes)]
    max_file_mb: Option<f64>,
    /// Refuse model files (checkpoints, galleries, ONNX) larger than this
    #[arg(long, global = true, env = "ARCFACE_MAX_MODEL_MB", default_value_t = 2000.0, value_parser = megabytes)]
    max_model_mb: f64,
}

fn megabytes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}`: expected megabytes, a number above 0")),
    }
}

impl LimitArgs {
    /// Sets this process's limits.
    fn apply(&self) {
        use crate::data::bounded::{set_max_bytes, Kind};
        crate::data::photo::set_max_pixels(self.max_pixels);
        set_max_bytes(Kind::Input, self.max_file_mb.map(|mb| (mb * 1e6) as u64));
        set_max_bytes(Kind::Model, Some((self.max_model_mb * 1e6) as u64));
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the GPU adapter that was chosen, its backend, driver and limits;
    /// with --model, a model's layer table, parameter count and multiply-adds
    Info(info::InfoCmd),
    /// L2-normalised face embeddings of images, with a checkpoint
    Embed(recognize::EmbedCmd),
    /// Who is in each image: the most probable people, with a checkpoint
    Predict(recognize::PredictCmd),
    /// Whole photos in per-person folders to aligned 112x112 face crops
    /// (MTCNN + alignment), in the same folders, with labels.csv and a report
    Prepare(detect::PrepareCmd),
    /// Import an ONNX face-embedding network (a MobileFaceNet-family model) as a checkpoint
    Import(serve::ImportCmd),
    /// Export a checkpoint as a standard ONNX model (opset 13, dynamic batch)
    Export(serve::ExportCmd),
    /// Are two photos the same person? Cosine similarity of their embeddings
    Verify(recognize::VerifyCmd),
    /// Verification accuracy (10-fold), ROC AUC, EER and TAR at FAR 1e-2 / 1e-3 on pairs
    EvalPairs(recognize::EvalPairsCmd),
    /// Store each person's mean embedding (photos in one folder per person) in a gallery
    Enroll(recognize::EnrollCmd),
    /// Who is in each photo, among the gallery's people, or "unknown"
    Identify(recognize::IdentifyCmd),
    /// The web page and JSON API: upload a photo, pick a model, see who it is
    Serve(serve::ServeCmd),
    /// Faces in photos (MTCNN): boxes, probabilities and five landmarks
    Detect(detect::DetectCmd),
    /// Check every kernel, forward and backward, on the GPU against its CPU reference
    Gradcheck(gradcheck::GradcheckCmd),
    /// Train a model on a folder with one sub-folder of photos per person, or a RecordIO set
    Train(training::TrainCmd),
    /// Train every (learning rate, momentum) pair; keep the lowest validation loss
    Sweep(training::SweepCmd),
    /// Evaluate a checkpoint on the test split saved with its run
    Eval(training::EvalCmd),
    /// A classifier's "unknown" threshold calibrated again on its run's
    /// validation split, written into the checkpoint
    Calibrate(training::CalibrateCmd),
    /// The whole pipeline on the bundled ORL faces: split, train, evaluate
    Demo(training::DemoCmd),
    /// Benchmarks
    Bench {
        #[command(subcommand)]
        what: bench::BenchCmd,
    },
    /// Shell completions on stdout, e.g. `arcface completions bash >
    /// ~/.local/share/bash-completion/completions/arcface`
    Completions {
        /// The shell to complete in
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Command {
    fn run(&self, gpu: &GpuArgs) -> anyhow::Result<bool> {
        match self {
            Command::Info(c) => c.run(gpu),
            Command::Embed(c) => c.run(gpu),
            Command::Predict(c) => c.run(gpu),
            Command::Prepare(c) => c.run(gpu),
            Command::Import(c) => c.run(),
            Command::Export(c) => c.run(),
            Command::Verify(c) => c.run(gpu),
            Command::EvalPairs(c) => c.run(gpu),
            Command::Enroll(c) => c.run(gpu),
            Command::Identify(c) => c.run(gpu),
            Command::Serve(c) => c.run(gpu),
            Command::Detect(c) => c.run(gpu),
            Command::Gradcheck(c) => c.run(gpu),
            Command::Train(c) => c.run(gpu),
            Command::Sweep(c) => c.run(gpu),
            Command::Eval(c) => c.run(gpu),
            Command::Calibrate(c) => c.run(gpu),
            Command::Demo(c) => c.run(gpu),
            Command::Bench { what } => what.run(gpu),
            Command::Completions { shell } => {
                clap_complete::generate(*shell, &mut Cli::command(), "arcface", &mut std::io::stdout());
                Ok(true)
            }
        }
    }
}

/// Parses `args` (the program name first) and runs the command.
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run(parse(Cli::command().get_matches_from(args)))
}

/// Whether `args` (the program name first) parse as a command line, or
/// clap's usage error (the README's commands are checked with it).
pub fn parses<I, T>(args: I) -> Result<(), String>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::command().try_get_matches_from(args).map(|_| ()).map_err(|e| e.to_string())
}

/// The parsed command line, with the flags each command needs to know were
/// given (rather than defaulted) recorded.
fn parse(matches: ArgMatches) -> Cli {
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Train(t), Some(("train", m))) = (&mut cli.command, matches.subcommand()) {
        t.given = given(&Cli::command(), "train", m);
    }
    cli
}

/// The ids of the subcommand's arguments whose values came from the command
/// line or the environment.
fn given(cli: &clap::Command, sub: &str, m: &ArgMatches) -> Vec<String> {
    let cmd = cli.find_subcommand(sub).expect("a known subcommand");
    cmd.get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| matches!(m.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)))
        .map(String::from)
        .collect()
}

/// The binary's entry: `main_with` on the process's arguments, where a
/// broken pipe on standard output (`arcface info --model mobilefacenet |
/// head`) ends the process quietly, as Unix tools do, instead of a panic in
/// `println!`. Not for `serve`, whose sockets must outlive clients that hang
/// up (Rust ignores SIGPIPE so that writes fail instead).
pub fn main() -> ExitCode {
    // RUST_LOG=wgpu_hal=info, arcface=debug, ... ; only warnings by default.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = parse(Cli::command().get_matches());
    #[cfg(unix)]
    if !matches!(cli.command, Command::Serve(_)) {
        // SAFETY: restores the default disposition of one signal; no handler
        // of ours is involved.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    run(cli)
}

fn run(cli: Cli) -> ExitCode {
    cli.limits.apply();
    match cli.command.run(&cli.gpu) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo bench --bench WHAT -- FLAGS` runs `arcface bench WHAT FLAGS`.
/// Cargo passes `--bench` to benchmark targets without a harness; it is
/// not a flag of ours and is dropped.
pub fn bench_main(what: &str) -> ExitCode {
    let flags = std::env::args_os().skip(1).filter(|a| a.as_os_str() != "--bench");
    let head = ["arcface", "bench", what].map(OsString::from);
    main_with(head.into_iter().chain(flags))
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use clap::CommandFactory;

    /// Every flag and positional of every command says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if a.get_help().is_none() && !matches!(a.get_id().as_str(), "help" | "version") {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "arcface", &mut missing);
        assert!(missing.is_empty(), "arguments without help:\n{}", missing.join("\n"));
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
