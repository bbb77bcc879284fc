//! `--config FILE` and `--print-config`: settings read from a TOML file,
//! under the flags and the environment, and the configuration they add up
//! to.
//!
//! Nothing here names a flag: the keys a file may hold are read from the
//! clap [`Command`] itself, so a flag added to a subcommand is a key at once.
//! The one exception is the arrays of tables (`section.rs`):
//! `[[jwt.issuer]]`, standing for values of the two flags that bind keys
//! to issuers, and `[[ssf.transmitter]]`, standing for values of the
//! `--ssf-transmitter*` flags.
//!
//! `file.rs` reads and checks a file and installs its values;
//! `section.rs` turns `[[jwt.issuer]]` and `[[ssf.transmitter]]` tables
//! into flag values;
//! `print.rs` renders `--print-config`.
//!
//! # The file
//!
//! Every flag of the subcommand being run is a key: its long name with `_`
//! for `-` (`--redis-url` is `redis_url`, `--server` is `server`). A value is
//! a TOML string, integer, float or boolean, standing for the text that would
//! follow the flag; a flag that takes no value (`--dev`) takes `true` or
//! `false`, and a repeatable flag also takes an array. Top-level keys are
//! settings of the subcommand being run. A table named after a subcommand
//! (`[serve]`, `[agent]`) holds settings of that subcommand only and wins
//! over the top level, so one file can configure both: the table of the
//! other subcommand is checked but not applied.
//!
//! ```toml
//! jwt_issuer = ["https://auth.example.com"]
//!
//! [serve]
//! redis_url = "redis://redis:6379"
//!
//! [agent]
//! server = ["http://revocd-1:50051", "http://revocd-2:50051"]
//! ```
//!
//! Keys bound to issuers may also be written as tables, one per issuer,
//! each standing for `--jwt-issuer-key ISSUER=PATH` and
//! `--jwt-issuer-hs256-secret-file ISSUER=PATH` values (`--print-config`
//! prints them as those flags' keys):
//!
//! ```toml
//! [[jwt.issuer]]
//! issuer = "https://a.example.com"
//! public_key_file = "/etc/revocd/a.pem"
//!
//! [[jwt.issuer]]
//! issuer = "https://b.example.com"
//! jwks_file = "/etc/revocd/b.jwks.json"
//! ```
//!
//! Shared Signals transmitters likewise, one table each (see
//! `section.rs` for the fields and the flags they stand for).
//!
//! # Precedence
//!
//! A flag beats its environment variable, which beats the file, which beats
//! the built-in default. The command line is parsed twice: once to learn the
//! subcommand and the file, then again with the file's values installed as
//! the arguments' defaults, so clap's own order (command line, then
//! environment, then default) is the whole precedence rule.
//!
//! # Errors and secrets
//!
//! Every key is checked, even one a flag overrides, so a file that loads
//! with one command line loads with any other. Errors name the file, the
//! line and the key, never a flag the user did not type. An argument whose
//! environment value clap hides (`hide_env_values`) is a secret: its value
//! is never echoed in an error, and [`Effective`] prints it redacted (a URL
//! keeps everything but its password) and commented out, so a printed
//! configuration read back never sets a secret to the placeholder.

mod file;
mod print;
mod section;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Args, Command, Parser};

use self::file::SettingsFile;
pub use self::print::Effective;
use crate::redact::REDACTED;

/// `--config` and `--print-config`, flattened into a binary's top-level
/// parser. Both are global, so they may follow the subcommand.
#[derive(Debug, Clone, Args)]
#[deny(missing_docs)]
pub struct FileArgs {
    /// TOML file of settings: each flag is a key (its long name with `_` for
    /// `-`); flags and environment variables win over the file.
    #[arg(long, env = "REVOCD_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration as TOML, secrets redacted and each
    /// value's origin in a comment, and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
}

/// Id of `--config`.
const CONFIG_ID: &str = "config";
/// Ids of the [`FileArgs`] arguments: they are not settings themselves.
const FILE_ARG_IDS: [&str; 2] = [CONFIG_ID, "print_config"];

/// Parses `args` (the program name first) into `P`, with the settings of the
/// `--config` file under the flags and the environment, and renders the
/// configuration that results for `--print-config`.
///
/// # Errors
/// [`Error::Args`] for the command line itself, including `--help` and
/// `--version` (print it with [`clap::Error::exit`]); the other variants for
/// the file.
pub fn parse<P: Parser>(args: Vec<OsString>) -> Result<(P, Effective), Error> {
    parse_with(args, |path| std::fs::read_to_string(path))
}

/// [`parse`], reading the file with `read`.
fn parse_with<P: Parser>(
    args: Vec<OsString>,
    read: impl FnOnce(&Path) -> std::io::Result<String>,
) -> Result<(P, Effective), Error> {
    let command = P::command();
    let mut built = command.clone();
    built.build();
    let file = load_file(&command, &built, &args, read)?;
    let command = match &file {
        Some(file) => file.apply(command),
        None => command,
    };
    let matches = command.try_get_matches_from(&args)?;
    let (subcommand, target) = target_matches(&matches);
    let target_command = target_command(&built, subcommand);
    if let Some(file) = &file {
        file.check_conflicts(target_command, target)?;
    }
    let title = match subcommand {
        Some(name) => format!("{} {name}", built.get_name()),
        None => built.get_name().to_owned(),
    };
    let effective = Effective::render(&title, target_command, target, file.as_ref());
    Ok((P::from_arg_matches(&matches)?, effective))
}

/// The `--config` file `args` name, read and checked against `built`.
///
/// Only the subcommand and the file are wanted from this first parse. Its
/// other errors wait for the second, as the file may supply what is
/// missing; clap never ignores `--help` and `--version`, so they end here.
fn load_file(
    command: &Command,
    built: &Command,
    args: &[OsString],
    read: impl FnOnce(&Path) -> std::io::Result<String>,
) -> Result<Option<SettingsFile>, Error> {
    let first = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(args)?;
    let (subcommand, first) = target_matches(&first);
    let Some(path) = first.get_one::<PathBuf>(CONFIG_ID) else {
        return Ok(None);
    };
    // Without the subcommand (a mistake the second parse reports), keys of
    // the intended one would be reported as typos.
    if subcommand.is_none() && built.has_subcommands() {
        return Ok(None);
    }
    SettingsFile::load(path, read, built, subcommand).map(Some)
}

/// The subcommand that runs (if any) and the matches its settings are in.
fn target_matches(matches: &ArgMatches) -> (Option<&str>, &ArgMatches) {
    match matches.subcommand() {
        Some((name, sub)) => (Some(name), sub),
        None => (None, matches),
    }
}

/// The (built) command whose arguments are the settings.
fn target_command<'a>(built: &'a Command, subcommand: Option<&str>) -> &'a Command {
    subcommand
        .and_then(|name| built.find_subcommand(name))
        .unwrap_or(built)
}

/// True for the arguments a file may set: those with a long flag that take
/// a value or are on/off flags. Help, version and [`FileArgs`] are not.
fn is_setting(arg: &Arg) -> bool {
    arg.get_long().is_some()
        && !FILE_ARG_IDS.contains(&arg.get_id().as_str())
        && matches!(
            arg.get_action(),
            ArgAction::Set | ArgAction::Append | ArgAction::SetTrue | ArgAction::SetFalse
        )
}

/// True for on/off flags, which take a TOML boolean.
fn is_flag(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// True for arguments that take several values, which take a TOML array.
fn is_multiple(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
        || arg
            .get_num_args()
            .is_some_and(|range| range.max_values() > 1)
}

/// True for secrets: the arguments whose environment values clap hides.
fn is_secret(arg: &Arg) -> bool {
    arg.is_hide_env_values_set()
}

/// The file key of a setting: its long name with `_` for `-`.
fn key_of(arg: &Arg) -> String {
    arg.get_long().unwrap_or_default().replace('-', "_")
}

/// The setting of `command` that `key` names.
fn find_setting<'a>(command: &'a Command, key: &str) -> Option<&'a Arg> {
    if key.contains('-') {
        return None;
    }
    command
        .get_arguments()
        .find(|arg| is_setting(arg) && key_of(arg) == key)
}

/// The name of `arg`'s environment variable, for messages.
fn env_name(arg: &Arg) -> String {
    arg.get_env()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// === errors ===

/// Where in a settings file: its path and a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as named on the command line.
    pub path: String,
    /// The line, from 1.
    pub line: usize,
}

impl Location {
    /// The line of byte `offset` of `text`.
    fn of(path: &str, text: &str, offset: usize) -> Self {
        let before = &text.as_bytes()[..offset.min(text.len())];
        Location {
            path: path.to_owned(),
            line: before.iter().filter(|&&byte| byte == b'\n').count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path, self.line)
    }
}

/// Why the command line or its settings file cannot be used. No variant
/// holds the value of a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is wrong, or asks for `--help` or `--version`.
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{at}: {message}")]
    Syntax {
        /// Where.
        at: Location,
        /// toml's complaint, without the line it quotes.
        message: String,
    },
    /// A key that is no setting of the command.
    #[error("{at}: unknown key `{key}`: the keys are the long flags of `{command}` with `_` for `-` (`{command} --print-config` lists them)")]
    UnknownKey {
        /// Where.
        at: Location,
        /// The key.
        key: String,
        /// The command whose settings were expected.
        command: String,
    },
    /// A top-level key that is a setting of another subcommand only.
    #[error("{at}: `{key}` is a setting of `{subcommand}` only: put it under [{subcommand}]")]
    OtherCommand {
        /// Where.
        at: Location,
        /// The key.
        key: String,
        /// The subcommand the key belongs to.
        subcommand: String,
    },
    /// A value of the wrong TOML type.
    #[error("{at}: `{key}` must be {expected}, not {found}")]
    WrongType {
        /// Where.
        at: Location,
        /// The key.
        key: String,
        /// The types accepted.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// A value the argument's parser rejects.
    #[error("{at}: `{key}`: {detail}")]
    InvalidValue {
        /// Where.
        at: Location,
        /// The key.
        key: String,
        /// The rejection (without the value for a secret).
        detail: String,
    },
    /// A secret set to the placeholder `--print-config` prints.
    #[error("{at}: `{key}` holds the {REDACTED} placeholder of --print-config: write the secret itself, or leave the key out and set {env}")]
    Placeholder {
        /// Where.
        at: Location,
        /// The key.
        key: String,
        /// The secret's environment variable.
        env: String,
    },
    /// A `[[jwt.issuer]]` or `[[ssf.transmitter]]` table that is not as
    /// documented.
    #[error("{at}: {table}: {detail}")]
    Table {
        /// Which kind of table.
        table: String,
        /// Where.
        at: Location,
        /// What is wrong, for a person to fix.
        detail: String,
    },
    /// A value in force beside one it conflicts with.
    #[error("{at}: `{key}` conflicts with {other}")]
    Conflict {
        /// Where.
        at: Location,
        /// The key.
        key: String,
        /// The other setting: a flag, a variable or a key of the file.
        other: String,
    },
}

#[cfg(test)]
mod tests;
