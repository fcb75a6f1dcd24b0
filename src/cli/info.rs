//! `arcface info`: the adapter, or with --model a model's layer table.

use super::args::{GpuArgs, ModelArg, ModelArgs};
use super::output::json;
use crate::models::ModelSpec;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct InfoCmd {
    /// Print the result as JSON on stdout (schema: README, "JSON output")
    #[arg(long)]
    json: bool,
    /// Describe this model instead of the adapter
    #[arg(long, value_enum)]
    model: Option<ModelArg>,
    /// Number of people (classes) for --model
    #[arg(long, default_value_t = 10)]
    classes: usize,
    #[command(flatten)]
    shape: ModelArgs,
}

impl InfoCmd {
    pub fn run(&self, gpu: &GpuArgs) -> Result<bool> {
        match self.model {
            Some(m) => {
                let spec = self.shape.spec(m, self.classes);
                spec.validate()?;
                print_model(&spec, self.json)?;
            }
            None => print_adapter(gpu, self.json)?,
        }
        Ok(true)
    }
}

fn print_adapter(gpu: &GpuArgs, as_json: bool) -> Result<()> {
    let r = gpu.open_quietly()?.report();
    if as_json {
        return json(&r);
    }
    println!("adapter        {}", r.name);
    println!("backend        {}", r.backend);
    println!(
        "device type    {}{}",
        r.device_type,
        if r.software { " (software rasteriser: expect CPU speed)" } else { "" }
    );
    println!("driver         {} {}", r.driver, r.driver_info);
    println!("kernels        {} (chosen by {})", r.kernels.name(), r.kernels_chosen_by);
    println!(
        "timestamps     {}",
        if r.timestamp_query { "yes (GPU-timed benchmarks)" } else { "no (benchmarks use the CPU clock)" }
    );
    println!(
        "f16            {}",
        if r.shader_f16 { "yes (--precision f16 trains with f16 activations)" } else { "no (--precision f32 only)" }
    );
    println!("max buffer     {:.0} MiB", r.max_buffer_size as f64 / 1048576.0);
    println!("max binding    {:.0} MiB (storage)", r.max_storage_buffer_binding_size as f64 / 1048576.0);
    println!("storage bufs   {} per stage", r.max_storage_buffers_per_shader_stage);
    println!(
        "workgroups     {} per dimension, {} invocations each",
        r.max_compute_workgroups_per_dimension, r.max_compute_invocations_per_workgroup
    );
    println!("shared memory  {} KiB per workgroup", r.max_compute_workgroup_storage_size / 1024);
    Ok(())
}

fn print_model(spec: &ModelSpec, as_json: bool) -> Result<()> {
    spec.validate()?;
    let table = spec.layer_table();
    if as_json {
        let layers: Vec<_> =
            table.iter().map(|(n, s, m)| serde_json::json!({ "layer": n, "output": s, "macs": m })).collect();
        return json(
            &serde_json::json!({ "model": spec, "parameters": spec.parameter_count(), "macs": spec.macs(), "layers": layers }),
        );
    }
    println!("{:<40} {:>16} {:>14}", "layer", "output (C,H,W)", "multiply-adds");
    for (name, s, macs) in &table {
        let shape: Vec<String> = s.iter().map(usize::to_string).collect();
        println!("{name:<40} {:>16} {macs:>14}", shape.join("x"));
    }
    println!("\nparameters     {} (learned; BN running statistics not counted)", spec.parameter_count());
    println!("multiply-adds  {} per image ({:.1} M)", spec.macs(), spec.macs() as f64 / 1e6);
    Ok(())
}
