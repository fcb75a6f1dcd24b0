//! Progress of the long loops (training, sweeps, detection and embedding of
//! many files) on stderr: an indicatif bar with the whole job's ETA where
//! stderr is a terminal; elsewhere (a log file, CI) no bar, only the lines a
//! loop prints as it goes (one per epoch). `quiet` silences both.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

pub struct Progress {
    bar: ProgressBar,
    quiet: bool,
    /// Repeats of the loop that fills the bar first (a sweep's runs), so
    /// that its length, and the ETA, covers them all.
    repeats: u64,
}

impl Progress {
    /// A bar of `total` `unit`s (0: the loop that fills it sets it).
    pub fn new(unit: &str, total: u64, quiet: bool) -> Progress {
        let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        let template = format!("{{msg}} [{{bar:28}}] {{human_pos}}/{{human_len}} {unit} {{per_sec}} ETA {{eta}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("#>."));
        }
        if !quiet {
            bar.enable_steady_tick(Duration::from_millis(500));
        }
        Progress { bar, quiet, repeats: 1 }
    }

    /// Nothing drawn, nothing printed.
    pub fn hidden() -> Progress {
        Progress::new("", 0, true)
    }

    /// The loop that fills this bar will run `n` times.
    pub fn repeated(mut self, n: usize) -> Progress {
        self.repeats = n.max(1) as u64;
        self
    }

    /// Sets the length from one run of the loop (`per_run` units), unless
    /// it was set already.
    pub fn expect(&self, per_run: u64) {
        if self.bar.length() == Some(0) {
            self.bar.set_length(per_run * self.repeats);
        }
    }

    /// Units that will not be run after all (a run that stopped early).
    pub fn skip(&self, units: u64) {
        let len = self.bar.length().unwrap_or(0);
        self.bar.set_length(len.saturating_sub(units).max(self.bar.position()));
    }

    pub fn inc(&self, units: u64) {
        self.bar.inc(units);
    }

    pub fn message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// A line that stays: above the bar on a terminal, a plain line on
    /// stderr otherwise; nothing when quiet.
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Clears the bar (before printing results on stdout).
    /// Whether nothing is shown (`--quiet`).
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
