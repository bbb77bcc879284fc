//! `--config FILE` and `--print-config`: settings read from a TOML file,
//! under the flags and the environment, and the configuration they add up
//! to.
//!
//! Nothing here names a flag: the keys a file may hold are read from the
//! clap [`Command`] itself, so a flag added to a subcommand is a key at once.
//! The one exception is the `[[jwt.issuer]]` tables (`section.rs`), which
//! stand for values of the two flags that bind keys to issuers.
//!
//! `file.rs` reads and checks a file and installs its values;
//! `section.rs` turns `[[jwt.issuer]]` tables into flag values;
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
pub use self::print::{redact, Effective};

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

/// What stands in for a secret, or a URL's password, in printed settings.
pub const REDACTED: &str = "<redacted>";

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
    /// A `[[jwt.issuer]]` table that is not as documented.
    #[error("{at}: [[jwt.issuer]]: {detail}")]
    IssuerTable {
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
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::Subcommand;
    use std::net::SocketAddr;
    use std::time::Duration;

    /// A small `revocd`: the kinds of argument the real one has. No
    /// argument reads a variable a test machine could have set.
    #[derive(Debug, Parser)]
    #[command(name = "demo")]
    struct Cli {
        #[command(flatten)]
        file: FileArgs,
        #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        #[command(subcommand)]
        command: Demo,
    }

    #[derive(Debug, Subcommand)]
    enum Demo {
        Serve(ServeArgs),
        Agent(AgentArgs),
    }

    #[derive(Debug, Args)]
    struct ServeArgs {
        #[arg(long, default_value = "127.0.0.1:1")]
        listen: SocketAddr,
        #[arg(long)]
        dev: bool,
        #[arg(long, env = "REVOCD_SETTINGS_TEST_REDIS_URL", hide_env_values = true)]
        redis_url: Option<String>,
        #[arg(long, env = "REVOCD_SETTINGS_TEST_PIN", hide_env_values = true)]
        pin: Option<u32>,
        #[arg(long, default_value_t = 100)]
        retention: u64,
        #[arg(long, default_value_t = 0.001)]
        fp_rate: f64,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[arg(long, value_delimiter = ',')]
        issuer: Vec<String>,
    }

    #[derive(Debug, Args)]
    struct AgentArgs {
        #[arg(long = "server", value_delimiter = ',', default_value = "http://a:1")]
        servers: Vec<String>,
        #[arg(long, conflicts_with = "api_key")]
        api_key_file: Option<PathBuf>,
        #[arg(long, env = "REVOCD_SETTINGS_TEST_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    }

    /// `demo <args>` with `file` as the text of any `--config` file.
    fn parse(args: &[&str], file: &str) -> Result<(Cli, Effective), Error> {
        let argv = std::iter::once("demo").chain(args.iter().copied());
        let text = file.to_owned();
        parse_with(argv.map(OsString::from).collect(), move |_| Ok(text))
    }

    fn serve(args: &[&str], file: &str) -> (ServeArgs, Effective) {
        let mut argv = vec!["serve", "--config", "f.toml"];
        argv.extend(args);
        match parse(&argv, file).expect("parses") {
            (
                Cli {
                    command: Demo::Serve(serve),
                    ..
                },
                effective,
            ) => (serve, effective),
            other => panic!("not serve: {other:?}"),
        }
    }

    fn agent(args: &[&str], file: &str) -> AgentArgs {
        let mut argv = vec!["agent", "--config", "f.toml"];
        argv.extend(args);
        match parse(&argv, file).expect("parses").0.command {
            Demo::Agent(agent) => agent,
            other => panic!("not agent: {other:?}"),
        }
    }

    fn error(args: &[&str], file: &str) -> Error {
        let mut argv = args.to_vec();
        argv.extend(["--config", "f.toml"]);
        parse(&argv, file).expect_err("the file is refused")
    }

    /// The value lines of a printed configuration, without comments.
    fn values(effective: &Effective) -> Vec<String> {
        let text = effective.to_string();
        let lines = text.lines().filter(|line| !line.starts_with('#'));
        lines
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_file_fills_in_what_flags_leave_unset() {
        let file = "retention = 7\ntimeout = \"5s\"\ndev = true\nissuer = [\"a\", \"b\"]\n\
                    fp_rate = 1e-2\nlisten = \"127.0.0.1:2\"\n";
        let (config, _) = serve(&[], file);
        assert_eq!(config.retention, 7);
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert!(config.dev);
        assert_eq!(config.issuer, ["a", "b"]);
        assert_eq!(config.fp_rate, 0.01);
        assert_eq!(config.listen.port(), 2);

        let (config, _) = serve(&["--retention", "9", "--issuer", "c"], file);
        assert_eq!(config.retention, 9, "a flag beats the file");
        assert_eq!(
            config.issuer,
            ["c"],
            "a flag replaces a list, not adds to it"
        );
        assert_eq!(config.timeout, Duration::from_secs(5));

        let (config, _) = serve(&[], "");
        assert_eq!(config.retention, 100, "no key: the default");
        assert!(!config.dev);
    }

    #[test]
    fn integers_floats_and_lists_read_as_the_flag_would() {
        let (config, _) = serve(&[], "retention = 0x10\nissuer = \"x,y\"\n");
        assert_eq!(config.retention, 16);
        assert_eq!(config.issuer, ["x", "y"], "split like --issuer x,y");
        assert_eq!(
            agent(&[], "server = \"http://b:2\"\n").servers,
            ["http://b:2"]
        );
        let servers = agent(&[], "[agent]\nserver = [\"http://b:2\", \"http://c:3\"]\n").servers;
        assert_eq!(servers, ["http://b:2", "http://c:3"]);
        assert!(agent(&[], "server = []\n").servers.is_empty());
    }

    #[test]
    fn global_flags_are_keys_too() {
        let (cli, effective) = parse(&["agent", "--config", "f"], "log_format = \"json\"").unwrap();
        assert_eq!(cli.log_format, "json");
        assert!(effective
            .to_string()
            .contains("# file f\nlog_format = \"json\"\n"));
        let (cli, _) = parse(
            &["--log-format", "text", "agent", "--config", "f"],
            "log_format = \"json\"",
        )
        .unwrap();
        assert_eq!(cli.log_format, "text");
    }

    #[test]
    fn a_subcommand_table_wins_and_the_other_is_checked_but_not_applied() {
        let file = "retention = 1\n[serve]\nretention = 2\n[agent]\nserver = [\"http://z:9\"]\n";
        assert_eq!(serve(&[], file).0.retention, 2);
        assert_eq!(
            agent(&[], "[serve]\nretention = 2\n").servers,
            ["http://a:1"]
        );
        let typo = error(&["serve"], "[agent]\nsever = \"http://z:9\"\n");
        let Error::UnknownKey { key, command, at } = &typo else {
            panic!("{typo:?}");
        };
        assert_eq!((&**key, &**command, at.line), ("sever", "demo agent", 2));
        let invalid = error(&["agent"], "[serve]\nretention = \"many\"\n");
        assert!(matches!(invalid, Error::InvalidValue { .. }), "{invalid:?}");
    }

    #[test]
    fn keys_are_checked_against_the_subcommand_being_run() {
        let wrong = error(&["serve"], "listen = \"127.0.0.1:1\"\n\nserver = \"x\"\n");
        assert_eq!(
            wrong.to_string(),
            "f.toml:3: `server` is a setting of `agent` only: put it under [agent]"
        );
        for key in ["nope", "redis-url", "config", "print_config", "help"] {
            let unknown = error(&["serve"], &format!("{key} = \"x\"\n"));
            assert!(
                matches!(&unknown, Error::UnknownKey { key: k, .. } if k == key),
                "{unknown:?}"
            );
            assert!(
                unknown.to_string().starts_with("f.toml:1: unknown key"),
                "{unknown}"
            );
        }
    }

    #[test]
    fn wrong_types_are_named() {
        let cases = [
            ("dev = \"true\"", "`dev` must be true or false, not string"),
            (
                "listen = [\"127.0.0.1:1\"]",
                "`listen` must be a string, a number or a boolean, not array",
            ),
            (
                "issuer = [[\"a\"]]",
                "`issuer` must be an array of strings or numbers, not array",
            ),
            (
                "retention = { a = 1 }",
                "`retention` must be a string, a number or a boolean, not table",
            ),
        ];
        for (file, message) in cases {
            let wrong = error(&["serve"], file);
            assert!(matches!(wrong, Error::WrongType { .. }), "{wrong:?}");
            assert_eq!(wrong.to_string(), format!("f.toml:1: {message}"));
        }
    }

    #[test]
    fn a_rejected_value_names_the_key_not_the_flag() {
        let wrong = error(&["serve"], "\nlisten = \"nowhere\"\n").to_string();
        assert_eq!(
            wrong,
            "f.toml:2: `listen`: invalid value \"nowhere\": invalid socket address syntax"
        );
        let wrong = error(&["serve"], "log_format = \"xml\"").to_string();
        assert_eq!(
            wrong,
            "f.toml:1: `log_format`: invalid value \"xml\": expected one of text, json"
        );
        // Checked even when a flag overrides it.
        let wrong = error(&["serve", "--retention", "1"], "retention = -1").to_string();
        assert!(
            wrong.starts_with("f.toml:1: `retention`: invalid value \"-1\""),
            "{wrong}"
        );
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let wrong = error(&["serve"], "pin = \"hunter2\"\n");
        assert!(matches!(wrong, Error::InvalidValue { .. }), "{wrong:?}");
        assert!(!wrong.to_string().contains("hunter2"), "{wrong}");
        assert!(wrong.to_string().contains("`pin`"), "{wrong}");
        // toml quotes the offending line in its own rendering.
        let wrong = error(
            &["serve"],
            "retention = 1\nredis_url = redis://:hunter2@h\n",
        );
        assert!(
            matches!(&wrong, Error::Syntax { at, .. } if at.line == 2),
            "{wrong:?}"
        );
        assert!(!wrong.to_string().contains("hunter2"), "{wrong}");
    }

    #[test]
    fn a_printed_placeholder_is_not_taken_for_a_secret() {
        let wrong = error(&["serve"], "redis_url = \"redis://u:<redacted>@h:6379\"\n");
        assert!(matches!(wrong, Error::Placeholder { .. }), "{wrong:?}");
        assert!(
            wrong.to_string().contains("REVOCD_SETTINGS_TEST_REDIS_URL"),
            "{wrong}"
        );
    }

    #[test]
    fn conflicts_clap_cannot_see_are_reported() {
        let both = "api_key_file = \"/k\"\napi_key = \"s3cret\"\n";
        let wrong = error(&["agent"], both).to_string();
        assert_eq!(
            wrong,
            "f.toml:1: `api_key_file` conflicts with `api_key` (line 2)"
        );
        let wrong = error(&["agent", "--api-key", "s3cret"], "api_key_file = \"/k\"\n").to_string();
        assert_eq!(
            wrong,
            "f.toml:1: `api_key_file` conflicts with flag --api-key"
        );
        // The same setting from a flag replaces the file's, no conflict.
        let config = agent(&["--api-key-file", "/j"], "api_key_file = \"/k\"\n");
        assert_eq!(config.api_key_file, Some(PathBuf::from("/j")));
    }

    #[test]
    fn the_command_line_is_checked_as_before() {
        let unknown = parse(&["serve", "--nope"], "").expect_err("unknown flag");
        assert!(matches!(&unknown, Error::Args(e) if e.kind() == ErrorKind::UnknownArgument));
        let help =
            parse(&["serve", "--config", "f", "--help"], "retention = \"bad\"").expect_err("help");
        assert!(matches!(&help, Error::Args(e) if e.kind() == ErrorKind::DisplayHelp));
        // No subcommand: the file is not read, the missing subcommand is the error.
        let missing = parse(&["--config", "f"], "nope = 1").expect_err("no subcommand");
        assert!(
            matches!(&missing, Error::Args(e) if e.kind() == ErrorKind::MissingSubcommand),
            "{missing:?}"
        );
    }

    #[test]
    fn print_config_says_where_each_value_came_from() {
        let file = "dev = true\nredis_url = \"redis://user:hunter2@h:6379/0\"\n";
        let (_, effective) = serve(&["--retention", "5"], file);
        let text = effective.to_string();
        for entry in [
            "# default\nlisten = \"127.0.0.1:1\"\n",
            "# file f.toml\ndev = true\n",
            "# file f.toml (secret: redacted, commented out)\n# redis_url = \"redis://user:<redacted>@h:6379/0\"\n",
            "# flag --retention\nretention = 5\n",
            "# default\nfp_rate = 0.001\n",
            "# default\ntimeout = \"2s\"\n",
            "# unset\n# pin =\n",
            "# unset\n# issuer =\n",
            "# default\nlog_format = \"text\"\n",
        ] {
            assert!(text.contains(entry), "{entry:?} missing from:\n{text}");
        }
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("config ="), "--config is no setting: {text}");
        toml::from_str::<toml::Table>(&text).expect("the output is TOML");
    }

    #[test]
    fn print_config_reads_back_as_the_same_configuration() {
        let file =
            "dev = true\nretention = 0x10\nissuer = [\"a\", \"b\"]\nlisten = \"127.0.0.1:9\"\n\
                    timeout = \"1m\"\nfp_rate = 1e-2\n[agent]\nserver = [\"http://b:2\"]\n";
        let (_, first) = serve(&["--log-format", "json"], file);
        let (_, second) = serve(&[], &first.to_string());
        assert_eq!(values(&first), values(&second));
        assert!(values(&second).contains(&"log_format = \"json\"".to_owned()));
        assert!(values(&second).contains(&"retention = 16".to_owned()));
    }
}
