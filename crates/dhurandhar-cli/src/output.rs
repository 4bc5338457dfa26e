//! Shared output plumbing: the `--json`/`--json-out` flags, one `emit` path, the
//! progress bar, and JSON to a file atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use dhurandhar::{Progress, Unit};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// `--json` and `--json-out`, flattened into every command's arguments.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Print the JSON document to stdout instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Also write the JSON document to this file (atomically).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

impl OutputArgs {
    /// The flags as the alias binaries spell them (own help text, same meaning).
    pub fn new(json: bool, json_out: Option<PathBuf>) -> Self {
        OutputArgs { json, json_out }
    }

    /// A progress sink for long jobs: a bar on stderr, hidden for `--json` (and by
    /// indicatif when stderr is not a terminal).
    pub fn progress(&self) -> Bar {
        Bar::new(!self.json)
    }
}

/// Print `report` as the flags ask: JSON to stdout with `--json`, otherwise the text
/// `render` makes; with `--json-out` the JSON also goes to that file.
pub fn emit<T: Serialize + ?Sized>(
    out: &OutputArgs,
    report: &T,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if let Some(path) = &out.json_out {
        write_json_file(path, report)?;
    }
    if out.json {
        print_json(report)
    } else {
        let mut text = render(report);
        if let Some(path) = &out.json_out {
            text.push_str(&format!("\nJSON written to {}\n", path.display()));
        }
        print_text(&text)
    }
}

/// Text to stdout. A closed pipe (`| head`) surfaces as an `io::Error` that
/// [`finish`](crate::finish) treats as success, never a panic.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Pretty JSON to stdout, newline-terminated.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print_text(&text)
}

/// `--json-out` must not replace a file the command reads (`inspect m.safetensors
/// --json-out m.safetensors` used to destroy the model). Checked on the raw arguments,
/// after they parsed and before any work, so every command and alias gets it: every
/// other argument (or `--flag=value` value) that names an existing file is an input.
pub fn check_json_out(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    let (mut outs, mut others) = (Vec::new(), Vec::new());
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--json-out" {
            outs.extend(it.next().map(PathBuf::from));
        } else if let Some(v) = s.strip_prefix("--json-out=") {
            outs.push(PathBuf::from(v));
        } else if let Some((_, v)) = s.split_once('=').filter(|_| s.starts_with("--")) {
            others.push(PathBuf::from(v));
        } else {
            others.push(PathBuf::from(a));
        }
    }
    let inputs: Vec<&Path> = others.iter().map(PathBuf::as_path).collect();
    for o in &outs {
        dhurandhar::dhurandhar_io::check_output(o, &inputs)?;
    }
    Ok(())
}

/// Pretty JSON to a file, atomically.
pub fn write_json_file<T: Serialize + ?Sized>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    dhurandhar::dhurandhar_io::write_atomic(path, &bytes)?;
    Ok(())
}

/// The CLI's [`Progress`] sink: an indicatif bar on stderr.
pub struct Bar {
    bar: ProgressBar,
    show: bool,
}

impl Bar {
    pub fn new(show: bool) -> Self {
        Bar {
            bar: ProgressBar::hidden(),
            show,
        }
    }
}

impl Progress for Bar {
    fn start(&self, label: &str, total: Option<u64>, unit: Unit) {
        if !self.show {
            return;
        }
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
        self.bar.reset();
        self.bar.set_length(total.unwrap_or(0));
        let template = match unit {
            Unit::Bytes => {
                "{msg:28} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
                    .to_string()
            }
            Unit::Items(what) => {
                format!("{{msg:28}} [{{bar:30}}] {{pos}}/{{len}} {what} eta {{eta}}")
            }
        };
        if let Ok(style) = ProgressStyle::with_template(&template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_message(label.to_string());
    }
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
    fn message(&self, text: &str) {
        if self.show {
            self.bar.suspend(|| eprintln!("{text}"));
        }
    }
}
