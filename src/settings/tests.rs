//! Unit tests for reading settings files: a small `revocd`-like command
//! line, files that fill in, conflict with or misspell its flags, and
//! `--print-config`.

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
    let file = "dev = true\nretention = 0x10\nissuer = [\"a\", \"b\"]\nlisten = \"127.0.0.1:9\"\n\
                timeout = \"1m\"\nfp_rate = 1e-2\n[agent]\nserver = [\"http://b:2\"]\n";
    let (_, first) = serve(&["--log-format", "json"], file);
    let (_, second) = serve(&[], &first.to_string());
    assert_eq!(values(&first), values(&second));
    assert!(values(&second).contains(&"log_format = \"json\"".to_owned()));
    assert!(values(&second).contains(&"retention = 16".to_owned()));
}
