//! The binaries' own word on their flags: every `revocd`/`revoctl` flag and
//! `REVOCD_*` variable `deploy/` uses is one the real binaries print in
//! their `--help`, for the right subcommand (a flag renamed in the code
//! fails here, not in someone's cluster).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::LazyLock;

use crate::compose::{compose, compose_invocations};
use crate::dockerfile::{dockerfile, exec_form};
use crate::files::{deploy_dir, files_under, relative};
use crate::k8s::{k8s_invocations, k8s_objects};

/// The options and environment variables one command accepts, as its
/// `--help` prints them.
#[derive(Debug, Default)]
struct Options {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

impl Options {
    fn add_help(&mut self, help: &str) {
        for line in help.lines() {
            let line = line.trim_start();
            // Option lines: `--name <VALUE>` or `-x, --name`.
            if line.starts_with('-') {
                if let Some(flag) = line
                    .split([' ', ','])
                    .find(|word| word.starts_with("--") && word.len() > 2)
                {
                    self.flags.insert(flag.to_owned());
                }
            }
            let mut rest = line;
            while let Some(at) = rest.find("[env: ") {
                rest = &rest[at + "[env: ".len()..];
                let end = rest.find(['=', ']']).expect("a closed [env: ...]");
                self.env.insert(rest[..end].to_owned());
            }
        }
    }
}

fn help(binary: &str, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .arg("--help")
        .env("COLUMNS", "200")
        .output()
        .unwrap_or_else(|e| panic!("running {binary}: {e}"));
    assert!(
        output.status.success(),
        "{binary} {args:?} --help failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

fn revocd_options(subcommand: &str) -> Options {
    let mut options = Options::default();
    options.add_help(&help(env!("CARGO_BIN_EXE_revocd"), &[subcommand]));
    assert!(
        options.flags.len() > 5 && !options.env.is_empty(),
        "revocd {subcommand} --help printed no options: {options:?}"
    );
    options
}

static SERVE: LazyLock<Options> = LazyLock::new(|| revocd_options("serve"));
static AGENT: LazyLock<Options> = LazyLock::new(|| revocd_options("agent"));
/// `revoctl` and every subcommand's options together.
static REVOCTL: LazyLock<Options> = LazyLock::new(|| {
    let binary = env!("CARGO_BIN_EXE_revoctl");
    let top = help(binary, &[]);
    let mut options = Options::default();
    options.add_help(&top);
    let subcommands: Vec<&str> = top
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert!(
        subcommands.len() >= 4,
        "revoctl subcommands: {subcommands:?}"
    );
    for subcommand in subcommands {
        options.add_help(&help(binary, &[subcommand]));
    }
    options
});

/// Which command a list of arguments is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Serve,
    Agent,
    Revoctl,
}

impl Program {
    fn options(self) -> &'static Options {
        match self {
            Program::Serve => &SERVE,
            Program::Agent => &AGENT,
            Program::Revoctl => &REVOCTL,
        }
    }

    /// The program `revocd <subcommand>` runs.
    pub fn of_subcommand(subcommand: &str, origin: &str) -> Program {
        match subcommand {
            "serve" => Program::Serve,
            "agent" => Program::Agent,
            other => panic!("{origin}: `revocd {other}` is not a revocd subcommand"),
        }
    }
}

/// Problems found, reported together at the end of a test.
#[derive(Default)]
pub struct Findings(pub Vec<String>);

impl Findings {
    pub fn flags(&mut self, program: Program, args: &[String], origin: &str) {
        for arg in args {
            let Some(flag) = arg.strip_prefix("--") else {
                continue;
            };
            let flag = format!("--{}", flag.split('=').next().unwrap_or_default());
            if !program.options().flags.contains(&flag) {
                self.0.push(format!(
                    "{origin}: {program:?} has no flag {flag} (see its --help)"
                ));
            }
        }
    }

    pub fn env(&mut self, program: Program, name: &str, origin: &str) {
        if name.starts_with("REVOCD_") && !program.options().env.contains(name) {
            self.0.push(format!(
                "{origin}: {program:?} reads no environment variable {name} (see its --help)"
            ));
        }
    }

    pub fn assert_none(self, what: &str) {
        assert!(self.0.is_empty(), "{what}:\n  {}", self.0.join("\n  "));
    }
}

/// The `revocd`/`revoctl` command lines written in prose and comments
/// (READMEs, YAML comments, the Dockerfile): each `revocd serve`,
/// `revocd agent` or `revoctl` up to the end of its line, continued over
/// lines ending in `\`.
pub fn prose_command_lines(text: &str) -> Vec<(Program, Vec<String>)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        for (needle, program) in [
            ("revocd serve", Some(Program::Serve)),
            ("revocd agent", Some(Program::Agent)),
            ("revoctl ", None),
        ] {
            let mut from = 0;
            while let Some(at) = line[from..].find(needle) {
                let start = from + at;
                from = start + needle.len();
                // Not inside another word or path (`revocd-agent`,
                // `bin/revoctl`).
                let before = line[..start].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '/' || c == '-') {
                    continue;
                }
                let mut command = line[from..].to_owned();
                let mut next = index + 1;
                while command.trim_end().ends_with('\\') && next < lines.len() {
                    command = command.trim_end().trim_end_matches('\\').to_owned();
                    command.push(' ');
                    command.push_str(lines[next].trim_start().trim_start_matches('#'));
                    next += 1;
                }
                // Up to a shell separator, or the word that ends a clause
                // or an inline code span (`...`, `...,`).
                let mut words = Vec::new();
                for word in command.split_whitespace() {
                    if matches!(word, "|" | "&&" | "||" | ";" | "#" | "`") {
                        break;
                    }
                    let bare = word.trim_matches(|c| matches!(c, '`' | '"' | ',' | '.' | ')'));
                    if bare.starts_with("--") && bare != "--" {
                        words.push(bare.to_owned());
                    }
                    if word.ends_with(['`', ',', '.', ')', ';']) {
                        break;
                    }
                }
                found.push((program.unwrap_or(Program::Revoctl), words));
            }
        }
    }
    found
}

/// `REVOCD_*` names anywhere in `text`.
fn env_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("REVOCD_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // `REVOCD_*` names them all, not one.
        if !tail[..end].ends_with('_') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// A revocd container or service: which program it runs, its arguments
/// after the subcommand, and its environment.
pub struct Invocation {
    pub origin: String,
    pub program: Program,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl Invocation {
    /// The revocd `command` (the subcommand first) of a service or
    /// container, with its environment; `origin` names it.
    pub fn new(origin: String, command: &[String], env: BTreeMap<String, String>) -> Self {
        Invocation {
            program: Program::of_subcommand(&command[0], &origin),
            args: command[1..].to_vec(),
            env,
            origin,
        }
    }
}

/// The value of `--flag` in `args` (`--flag=value` or `--flag value`).
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(index, arg)| {
        if let Some(value) = arg.strip_prefix(&format!("{flag}=")) {
            Some(value)
        } else if arg == flag {
            args.get(index + 1).map(String::as_str)
        } else {
            None
        }
    })
}

/// A setting of an invocation: its flag, else its environment variable.
pub fn setting<'a>(invocation: &'a Invocation, flag: &str, env: &str) -> Option<&'a str> {
    flag_value(&invocation.args, flag).or(invocation.env.get(env).map(String::as_str))
}

pub fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

#[test]
fn every_flag_and_variable_used_in_deploy_exists() {
    let mut findings = Findings::default();
    let mut invocations = compose_invocations(&compose());
    invocations.extend(k8s_invocations(&k8s_objects()));
    assert!(
        invocations.len() >= 5,
        "the revocd services and containers were not found"
    );
    for invocation in &invocations {
        findings.flags(invocation.program, &invocation.args, &invocation.origin);
        for name in invocation.env.keys() {
            findings.env(invocation.program, name, &invocation.origin);
        }
    }

    // The image: its default command and its environment (read by `serve`).
    for (instruction, rest) in dockerfile() {
        match instruction.as_str() {
            "CMD" => {
                let command = exec_form(&rest);
                let program = Program::of_subcommand(&command[0], "Dockerfile CMD");
                findings.flags(program, &command[1..], "Dockerfile CMD");
            }
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let name = pair.split('=').next().unwrap_or_default();
                    findings.env(Program::Serve, name, "Dockerfile ENV");
                }
            }
            _ => {}
        }
    }

    // Command lines and variable names in comments and READMEs.
    let all = Options {
        flags: BTreeSet::new(),
        env: [&*SERVE, &*AGENT, &*REVOCTL]
            .iter()
            .flat_map(|options| options.env.iter().cloned())
            .collect(),
    };
    let mut prose_commands = 0;
    for path in files_under(&deploy_dir()) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let origin = format!("deploy/{}", relative(&path));
        for (program, flags) in prose_command_lines(&text) {
            prose_commands += 1;
            findings.flags(program, &flags, &format!("{origin} (command line)"));
        }
        for name in env_names(&text) {
            if !all.env.contains(&name) {
                findings.0.push(format!(
                    "{origin}: no binary reads an environment variable {name}"
                ));
            }
        }
    }
    assert!(
        prose_commands >= 3,
        "the command lines in deploy/'s docs were not found"
    );
    findings.assert_none("deploy/ uses flags or variables the binaries do not have");
}

#[test]
fn the_flag_check_catches_a_misspelt_flag_or_variable() {
    let mut findings = Findings::default();
    findings.flags(Program::Agent, &["--http-listen=0.0.0.0:8081".into()], "ok");
    findings.env(Program::Serve, "REVOCD_REDIS_URL", "ok");
    assert!(findings.0.is_empty(), "{:?}", findings.0);
    findings.flags(Program::Agent, &["--listen=0.0.0.0:8081".into()], "bad");
    findings.env(Program::Agent, "REVOCD_REDIS_URL", "bad");
    findings.env(Program::Serve, "REVOCD_LISTENS", "bad");
    assert_eq!(findings.0.len(), 3, "{:?}", findings.0);

    let lines = prose_command_lines(
        "run `revocd agent --server http://a:1 \\\n  # --ext-authz-listen 127.0.0.1:9191`\n\
         then revoctl --server x stats, and cargo run --bin revoctl -- --json",
    );
    assert_eq!(
        lines,
        vec![
            (
                Program::Agent,
                vec!["--server".to_owned(), "--ext-authz-listen".to_owned()]
            ),
            (Program::Revoctl, vec!["--server".to_owned()]),
            (Program::Revoctl, vec!["--json".to_owned()]),
        ]
    );
}
