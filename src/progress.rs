//! Logging and progress: tracing to stderr, and per-step progress lines
//! (a spinner on a terminal, plain lines otherwise).

use std::io::IsTerminal;

/// Set up tracing on stderr: info by default, debug with -v, trace with -vv;
/// RUST_LOG overrides.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// An error chain as one paragraph: `a: b: c`, each cause once.
pub fn format_error(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Progress of a long build, one step at a time: a spinner with the step and
/// the latest output line on a terminal, plain `==>` lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    step: std::sync::Mutex<String>,
    quiet: bool,
}

impl Progress {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            step: std::sync::Mutex::new(String::new()),
            quiet: false,
        }
    }

    /// Plain `==>` lines, never a spinner: for a build that runs beside
    /// another, whose progress owns the terminal.
    pub fn lines() -> Self {
        Progress {
            bar: None,
            step: std::sync::Mutex::new(String::new()),
            quiet: false,
        }
    }

    /// A progress that shows nothing (for checks).
    pub fn quiet() -> Self {
        Progress {
            bar: None,
            step: std::sync::Mutex::new(String::new()),
            quiet: true,
        }
    }

    /// Start a named step.
    pub fn step(&self, text: impl Into<String>) {
        let text = text.into();
        crate::timings::mark(&text);
        match &self.bar {
            Some(bar) => {
                bar.println(format!("==> {text}"));
                bar.set_message(text.clone());
            }
            None if !self.quiet => tracing::info!("==> {text}"),
            None => {}
        }
        if let Ok(mut s) = self.step.lock() {
            *s = text;
        }
    }

    /// A line of output from the running step (shown after the step name).
    pub fn output(&self, line: &str) {
        if let Some(bar) = &self.bar {
            let step = self.step.lock().map(|s| s.clone()).unwrap_or_default();
            let short: String = line.chars().take(80).collect();
            bar.set_message(format!("{step}: {short}"));
        }
    }

    /// A finished result worth a line of its own.
    pub fn done(&self, text: impl Into<String>) {
        let text = text.into();
        match &self.bar {
            Some(bar) => bar.println(format!("    {text}")),
            None if !self.quiet => tracing::info!("    {text}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
