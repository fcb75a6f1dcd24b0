//! `arcface gradcheck`.

use super::args::{GpuArgs, PrecisionArg};
use super::output::json;
use crate::kernels::check::CheckRow;
use crate::kernels::gradcheck;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct GradcheckCmd {
    /// Only this kernel family
    #[arg(long, value_parser = super::args::kernel_family())]
    kernel: Option<String>,
    /// Seed of the random inputs and shapes
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The kernels' f32 variants, or their f16 ones (inputs and outputs
    /// stored in f16, compared at the f16 tolerance; adapters with
    /// SHADER_F16 only)
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Print the rows as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
}

impl GradcheckCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        let families = gradcheck::select(self.kernel.as_deref())?;
        let gpu = gpu.open()?;
        let half = matches!(self.precision, PrecisionArg::F16);
        if half {
            crate::nn::require_f16(&gpu)?;
        }
        if !self.json {
            let r = gpu.report();
            let variants = if half { ", f16 variants" } else { "" };
            println!("gradcheck on {} ({}, {}), seed {}{variants}\n", r.name, r.backend, r.device_type, self.seed);
        }
        let rows = if half {
            crate::kernels::check::in_half(|| gradcheck::run(&gpu, &families, self.seed))?
        } else {
            gradcheck::run(&gpu, &families, self.seed)?
        };
        if self.json {
            json(&rows)?;
        } else {
            print_table(&rows);
        }
        Ok(rows.iter().all(|r| r.pass))
    }
}

fn print_table(rows: &[CheckRow]) {
    println!(
        "{:<14} {:<30} {:<36} {:>10} {:>10} {:>18}  result",
        "kernel", "direction", "shape", "max|err|", "max rel", "tol (abs+rel*|ref|)"
    );
    for r in rows {
        println!(
            "{:<14} {:<30} {:<36} {:>10.2e} {:>10.2e} {:>18}  {}",
            r.kernel,
            r.direction,
            r.shape,
            r.max_abs_err,
            r.max_rel_err,
            format!("{:.0e}+{:.0e}", r.tol.atol, r.tol.rtol),
            if r.pass { "pass" } else { "FAIL" }
        );
        for m in &r.mismatches {
            println!("    {m}");
        }
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!("{} passed, {} failed", rows.len() - failed, failed);
}
