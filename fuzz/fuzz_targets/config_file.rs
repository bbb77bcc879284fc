//! `--config` files → `revocd::settings::parse`, the only public entry of
//! the settings file reader (it reads a path, so each input is written to a
//! per-process temporary file), for `revocd serve` and `revocd agent`.
//!
//! Never panics, and what loads round-trips as the README promises: the
//! `--print-config` output is itself a settings file, and reading it back
//! gives the same settings (comment lines aside: origins change, and
//! secrets, printed commented out, are not set again).
//!
//! `Cli` mirrors `src/bin/revocd.rs`'s parser (not part of the library):
//! the settings are the long flags of `config::ServeConfig` and
//! `config::AgentConfig`, plus the global `--log-format`.
#![no_main]

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{Parser, Subcommand, ValueEnum};
use libfuzzer_sys::fuzz_target;
use revocd::config::{AgentConfig, ServeConfig};
use revocd::settings;

#[derive(Debug, Parser)]
#[command(name = "revocd")]
struct Cli {
    #[arg(long, env = "REVOCD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(flatten)]
    settings: settings::FileArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
enum Command {
    Serve(ServeConfig),
    Agent(AgentConfig),
}

/// The per-process files the inputs (`0`) and printed settings (`1`) are
/// written to.
fn path(which: usize) -> &'static PathBuf {
    static PATHS: OnceLock<[PathBuf; 2]> = OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        let name = |n| format!("revocd-fuzz-config-{}-{n}.toml", std::process::id());
        [0, 1].map(|n| std::env::temp_dir().join(name(n)))
    });
    &paths[which]
}

/// `revocd --config <file> <subcommand>`, the file holding `text`.
fn parse(text: &[u8], which: usize, subcommand: &str) -> Result<String, settings::Error> {
    let path = path(which);
    std::fs::write(path, text).expect("writing the temporary config file");
    let args: Vec<OsString> = vec![
        "revocd".into(),
        "--config".into(),
        path.into(),
        subcommand.into(),
    ];
    settings::parse::<Cli>(args).map(|(_cli, effective)| effective.to_string())
}

/// The lines that set something: not comments, not blank.
fn settings_lines(printed: &str) -> Vec<&str> {
    printed
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    for subcommand in ["serve", "agent"] {
        let Ok(printed) = parse(data, 0, subcommand) else {
            continue;
        };
        let again = match parse(printed.as_bytes(), 1, subcommand) {
            Ok(again) => again,
            Err(error) => panic!("--print-config output does not load: {error}\n{printed}"),
        };
        assert_eq!(
            settings_lines(&printed),
            settings_lines(&again),
            "--print-config output loads as other settings"
        );
    }
});
