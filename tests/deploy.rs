//! The deployment examples in `deploy/`, checked against the code.
//!
//! Docker, Kubernetes, Envoy and Traefik are not on this machine, so the
//! examples are checked the ways that do not need them:
//!
//! - every YAML file parses (each document of a multi-document file);
//! - every `revocd`/`revoctl` flag and `REVOCD_*` variable they use is one
//!   the real binaries print in their `--help`, for the right subcommand
//!   (a flag renamed in the code fails here, not in someone's cluster);
//! - the pieces refer to each other correctly: ports, service names,
//!   Secret keys and mount paths, the compose example keys and the
//!   API-keys files (parsed by [`Access::from_toml`]);
//! - `deploy/envoy/envoy.yaml` is decoded as an Envoy `Bootstrap` message
//!   from Envoy's own protos (those `envoy-types` ships), so a misspelt
//!   field or type URL fails as it would in Envoy;
//! - the compose stack is rehearsed without Docker: Redis, the two
//!   replicas, the agent and nginx (with the compose site and
//!   `deploy/nginx/`'s snippets) run as local processes with the compose
//!   file's own commands, environment and secrets (addresses moved to
//!   loopback), its healthchecks are run as written, and a token is
//!   allowed (a forged `X-Auth-Subject` replaced), revoked with the example
//!   operator key, then refused;
//! - the Kubernetes sidecar's nginx site passes `nginx -t`;
//! - `deploy/revocd.toml` loads for `revocd serve` and `revocd agent`.
//! - the Grafana dashboard and the Prometheus alert rules parse, are
//!   complete (every panel titled and queried, every alert with `for`, a
//!   severity and a summary), and query only metrics and labels the code
//!   records (read from `src/`); `promtool check rules` too, where installed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use revocd::auth::{Access, Role};
use serde_json::Value as Json;
use support::{free_port, sign_with, RedisServer};

// === files ===

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The text of `deploy/<relative>`.
fn read(relative: &str) -> String {
    let path = deploy_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("listing deploy/") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `path` relative to `deploy/`, with `/` separators.
fn relative(path: &Path) -> String {
    path.strip_prefix(deploy_dir())
        .expect("a file under deploy/")
        .to_string_lossy()
        .replace('\\', "/")
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yml" | "yaml")
    )
}

/// The documents of a YAML file as JSON values, merge keys (`<<`) applied;
/// empty documents are skipped.
fn yaml_docs(relative: &str) -> Vec<Json> {
    let text = read(relative);
    let mut docs = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value: serde_yaml_ng::Value = serde::Deserialize::deserialize(document)
            .unwrap_or_else(|e| panic!("deploy/{relative}, document {index}: {e}"));
        if value.is_null() {
            continue;
        }
        let mut json = serde_json::to_value(&value).unwrap_or_else(|e| {
            panic!("deploy/{relative}, document {index} is not JSON-shaped: {e}")
        });
        apply_merge_keys(&mut json);
        docs.push(json);
    }
    assert!(!docs.is_empty(), "deploy/{relative} has no documents");
    docs
}

fn yaml(relative: &str) -> Json {
    let mut docs = yaml_docs(relative);
    assert_eq!(docs.len(), 1, "deploy/{relative}: one document expected");
    docs.remove(0)
}

/// YAML merge keys, nested ones included: `<<: *base` fills in the keys
/// the mapping does not set itself.
fn apply_merge_keys(value: &mut Json) {
    match value {
        Json::Object(map) => {
            if let Some(mut merged) = map.remove("<<") {
                apply_merge_keys(&mut merged);
                let sources = match merged {
                    Json::Array(items) => items,
                    other => vec![other],
                };
                for source in sources {
                    let Json::Object(source) = source else {
                        panic!("a merge key (<<) names something other than a mapping");
                    };
                    for (key, item) in source {
                        map.entry(key).or_insert(item);
                    }
                }
            }
            map.values_mut().for_each(apply_merge_keys);
        }
        Json::Array(items) => items.iter_mut().for_each(apply_merge_keys),
        _ => {}
    }
}

fn str_of<'a>(value: &'a Json, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: a string expected, found {value}"))
}

fn strings(value: &Json, what: &str) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what}: a list expected, found {value}"))
        .iter()
        .map(|item| str_of(item, what).to_owned())
        .collect()
}

// === the binaries' own word on their flags ===

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
enum Program {
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
    fn of_subcommand(subcommand: &str, origin: &str) -> Program {
        match subcommand {
            "serve" => Program::Serve,
            "agent" => Program::Agent,
            other => panic!("{origin}: `revocd {other}` is not a revocd subcommand"),
        }
    }
}

/// Problems found, reported together at the end of a test.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn flags(&mut self, program: Program, args: &[String], origin: &str) {
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

    fn env(&mut self, program: Program, name: &str, origin: &str) {
        if name.starts_with("REVOCD_") && !program.options().env.contains(name) {
            self.0.push(format!(
                "{origin}: {program:?} reads no environment variable {name} (see its --help)"
            ));
        }
    }

    fn assert_none(self, what: &str) {
        assert!(self.0.is_empty(), "{what}:\n  {}", self.0.join("\n  "));
    }
}

// === YAML, and the flags and variables used everywhere ===

#[test]
fn every_yaml_file_parses() {
    let yaml_files: Vec<PathBuf> = files_under(&deploy_dir())
        .into_iter()
        .filter(|path| is_yaml(path))
        .collect();
    for must in [
        "docker-compose.yml",
        "k8s/revocd-server.yaml",
        "k8s/revocd-config.yaml",
        "k8s/agent-sidecar.yaml",
        "envoy/envoy.yaml",
        "traefik/dynamic.yaml",
    ] {
        assert!(
            yaml_files.iter().any(|path| relative(path) == must),
            "deploy/{must} is missing"
        );
    }
    for path in &yaml_files {
        let relative = relative(path);
        for (index, doc) in yaml_docs(&relative).iter().enumerate() {
            assert!(
                doc.is_object(),
                "deploy/{relative}, document {index}: a mapping expected"
            );
            if relative.starts_with("k8s/") {
                for field in ["apiVersion", "kind"] {
                    assert!(
                        doc[field].is_string(),
                        "deploy/{relative}, document {index}: no {field}"
                    );
                }
                assert!(
                    doc["metadata"]["name"].is_string(),
                    "deploy/{relative}, document {index}: no metadata.name"
                );
                assert!(
                    doc["metadata"].get("namespace").is_none(),
                    "deploy/{relative}: manifests leave the namespace to `kubectl -n`"
                );
            }
        }
    }
}

/// The `revocd`/`revoctl` command lines written in prose and comments
/// (READMEs, YAML comments, the Dockerfile): each `revocd serve`,
/// `revocd agent` or `revoctl` up to the end of its line, continued over
/// lines ending in `\`.
fn prose_command_lines(text: &str) -> Vec<(Program, Vec<String>)> {
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
struct Invocation {
    origin: String,
    program: Program,
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

fn compose() -> Json {
    yaml("docker-compose.yml")
}

fn compose_services(compose: &Json) -> &serde_json::Map<String, Json> {
    compose["services"]
        .as_object()
        .expect("docker-compose.yml: services")
}

/// The compose services that run the revocd image.
fn compose_invocations(compose: &Json) -> Vec<Invocation> {
    let mut found = Vec::new();
    for (name, service) in compose_services(compose) {
        let image = service["image"].as_str().unwrap_or_default();
        if !image.starts_with("revocd") {
            continue;
        }
        let origin = format!("docker-compose.yml, service {name}");
        let command = strings(&service["command"], &origin);
        let env = service["environment"]
            .as_object()
            .map(|env| {
                env.iter()
                    .map(|(key, value)| (key.clone(), value_string(value)))
                    .collect()
            })
            .unwrap_or_default();
        found.push(Invocation {
            program: Program::of_subcommand(&command[0], &origin),
            args: command[1..].to_vec(),
            env,
            origin,
        });
    }
    found
}

fn value_string(value: &Json) -> String {
    match value {
        Json::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Every document of every Kubernetes manifest.
fn k8s_objects() -> Vec<(String, Json)> {
    let mut objects = Vec::new();
    for path in files_under(&deploy_dir().join("k8s")) {
        if is_yaml(&path) {
            let relative = relative(&path);
            for doc in yaml_docs(&relative) {
                objects.push((relative.clone(), doc));
            }
        }
    }
    objects
}

fn k8s_object<'a>(objects: &'a [(String, Json)], kind: &str, name: &str) -> &'a Json {
    objects
        .iter()
        .map(|(_, object)| object)
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/k8s/ has no {kind} {name}"))
}

fn containers(deployment: &Json) -> &Vec<Json> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("a Deployment's containers")
}

/// The Kubernetes containers that run the revocd image, with the
/// variables of the ConfigMaps they load.
fn k8s_invocations(objects: &[(String, Json)]) -> Vec<Invocation> {
    let mut found = Vec::new();
    for (file, object) in objects {
        if object["kind"] != "Deployment" {
            continue;
        }
        for container in containers(object) {
            let image = container["image"].as_str().unwrap_or_default();
            if !image.contains("revocd") {
                continue;
            }
            let origin = format!("{file}, container {}", container["name"]);
            let args = strings(&container["args"], &origin);
            let mut env = BTreeMap::new();
            for var in container["env"].as_array().into_iter().flatten() {
                let value = var["value"].as_str().unwrap_or("<from a reference>");
                env.insert(str_of(&var["name"], &origin).to_owned(), value.to_owned());
            }
            for source in container["envFrom"].as_array().into_iter().flatten() {
                let name = str_of(&source["configMapRef"]["name"], &origin);
                let config_map = k8s_object(objects, "ConfigMap", name);
                for (key, value) in config_map["data"].as_object().expect("ConfigMap data") {
                    env.insert(key.clone(), value_string(value));
                }
            }
            found.push(Invocation {
                program: Program::of_subcommand(&args[0], &origin),
                args: args[1..].to_vec(),
                env,
                origin,
            });
        }
    }
    found
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (instruction, rest) = current.split_once(' ').unwrap_or((&current, ""));
        instructions.push((instruction.to_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    instructions
}

fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("exec form {text:?}: {e}"))
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

// === the Dockerfile ===

#[test]
fn dockerfile_builds_both_binaries_and_runs_unprivileged() {
    let instructions = dockerfile();
    let from: Vec<&str> = instructions
        .iter()
        .filter(|(instruction, _)| instruction == "FROM")
        .map(|(_, rest)| rest.as_str())
        .collect();
    assert_eq!(
        from,
        ["rust:1.95-bookworm AS builder", "debian:bookworm-slim"],
        "multi-stage: Rust builder, slim runtime"
    );

    // The builder's Rust is at least the crate's rust-version.
    let manifest: toml::Table =
        toml::from_str(include_str!("../Cargo.toml")).expect("Cargo.toml parses");
    let rust_version = manifest["package"]["rust-version"]
        .as_str()
        .expect("rust-version");
    let minor = |version: &str| -> u32 {
        version
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .expect("1.N")
    };
    assert!(
        minor("1.95") >= minor(rust_version),
        "builder older than {rust_version}"
    );

    let run = instructions
        .iter()
        .find(|(instruction, rest)| instruction == "RUN" && rest.contains("cargo build"))
        .map(|(_, rest)| rest.as_str())
        .expect("a cargo build step");
    let bins: Vec<&str> = manifest["bin"]
        .as_array()
        .expect("[[bin]] targets")
        .iter()
        .map(|bin| bin["name"].as_str().expect("bin name"))
        .collect();
    assert!(
        run.contains("--release") && run.contains("--locked"),
        "{run}"
    );
    for bin in &bins {
        assert!(
            run.contains(&format!("--bin {bin}")),
            "{bin} is not built: {run}"
        );
    }

    let last_user = instructions
        .iter()
        .rev()
        .find(|(instruction, _)| instruction == "USER")
        .map(|(_, rest)| rest.as_str());
    assert_eq!(last_user, Some("10001:10001"), "runs as uid 10001");
    let exposed: BTreeSet<&str> = instructions
        .iter()
        .filter(|(instruction, _)| instruction == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .collect();
    assert_eq!(exposed, BTreeSet::from(["50051", "8081", "9090"]));
    let entrypoint = instructions
        .iter()
        .find(|(instruction, _)| instruction == "ENTRYPOINT")
        .map(|(_, rest)| exec_form(rest));
    assert_eq!(entrypoint, Some(vec!["revocd".to_owned()]));

    // The build context keeps out what would make it huge.
    let ignored: Vec<String> = read("Dockerfile.dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for must in ["target", ".git"] {
        assert!(
            ignored.iter().any(|line| line == must),
            "{must} not ignored"
        );
    }
}

// === docker compose ===

/// The value of `--flag` in `args` (`--flag=value` or `--flag value`).
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
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
fn setting<'a>(invocation: &'a Invocation, flag: &str, env: &str) -> Option<&'a str> {
    flag_value(&invocation.args, flag).or(invocation.env.get(env).map(String::as_str))
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

#[test]
fn compose_runs_redis_two_replicas_an_agent_and_nginx() {
    let compose = compose();
    let services = compose_services(&compose);

    let redis = &services["redis"];
    assert!(str_of(&redis["image"], "redis image").starts_with("redis:7"));
    let redis_command = strings(&redis["command"], "redis command").join(" ");
    assert!(
        redis_command.contains("--appendonly yes")
            && redis_command.contains("--appendfsync everysec"),
        "Redis persists with AOF: {redis_command}"
    );
    assert!(
        strings(&redis["volumes"], "redis volumes")
            .iter()
            .any(|volume| volume.ends_with(":/data")),
        "Redis keeps /data in a volume"
    );

    let invocations = compose_invocations(&compose);
    let servers: Vec<&Invocation> = invocations
        .iter()
        .filter(|invocation| invocation.program == Program::Serve)
        .collect();
    let agents: Vec<&Invocation> = invocations
        .iter()
        .filter(|invocation| invocation.program == Program::Agent)
        .collect();
    assert_eq!(servers.len(), 2, "two revocd serve replicas");
    assert_eq!(agents.len(), 1, "one revocd agent");

    let mut server_urls = BTreeSet::new();
    for server in &servers {
        let name = server.origin.rsplit(' ').next().expect("service name");
        let listen = setting(server, "--listen", "REVOCD_LISTEN").expect("a listen address");
        assert_eq!(listen, "0.0.0.0:50051", "{}", server.origin);
        let redis_url = setting(server, "--redis-url", "REVOCD_REDIS_URL").expect("Redis");
        assert_eq!(redis_url, "redis://redis:6379", "{}", server.origin);
        for (flag, env) in [
            ("--api-keys-file", "REVOCD_API_KEYS_FILE"),
            ("--jwt-hs256-secret-file", "REVOCD_JWT_HS256_SECRET_FILE"),
        ] {
            let path = setting(server, flag, env).unwrap_or_else(|| panic!("{flag}"));
            compose_secret_file(&compose, name, path);
        }
        server_urls.insert(format!("http://{name}:50051"));
    }

    let agent = agents[0];
    let agent_name = agent.origin.rsplit(' ').next().expect("service name");
    let followed: BTreeSet<String> = setting(agent, "--server", "REVOCD_SERVER")
        .expect("--server")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(followed, server_urls, "the agent follows both replicas");
    assert_eq!(
        flag_value(&agent.args, "--http-listen"),
        Some("0.0.0.0:8081")
    );
    assert_eq!(
        flag_value(&agent.args, "--metrics-listen"),
        Some("0.0.0.0:9090")
    );
    let key_file = flag_value(&agent.args, "--api-key-file").expect("--api-key-file");
    compose_secret_file(&compose, agent_name, key_file);
    let agent_health =
        strings(&services[agent_name]["healthcheck"]["test"], "healthcheck").join(" ");
    assert!(
        agent_health.contains("/9090") && agent_health.contains("/healthz"),
        "the agent's healthcheck asks /healthz on the metrics port: {agent_health}"
    );

    // nginx in front of the upstream, with the forward-auth snippet, and
    // every bind-mounted file present.
    let nginx = &services["nginx"];
    let mounts = strings(&nginx["volumes"], "nginx volumes");
    assert!(
        mounts
            .iter()
            .any(|mount| mount.starts_with("./nginx/revocd-auth.conf:")),
        "nginx mounts deploy/nginx/revocd-auth.conf: {mounts:?}"
    );
    for (name, service) in services {
        for mount in service["volumes"].as_array().into_iter().flatten() {
            let mount = str_of(mount, "volume");
            if let Some(source) = mount.strip_prefix("./") {
                let source = source.split(':').next().unwrap_or_default();
                assert!(
                    deploy_dir().join(source).is_file(),
                    "service {name} mounts deploy/{source}, which does not exist"
                );
            }
        }
    }
    for snippet in ["revocd-auth.conf", "revocd-protect.conf"] {
        assert!(
            mounts
                .iter()
                .any(|mount| *mount == format!("./nginx/{snippet}:/etc/nginx/{snippet}:ro")),
            "nginx mounts deploy/nginx/{snippet} next to nginx.conf: {mounts:?}"
        );
    }
    let site = read("compose/nginx-demo.conf");
    let http_port = port_of(flag_value(&agent.args, "--http-listen").expect("--http-listen"));
    assert!(
        site.contains(&format!("server {agent_name}:{http_port};")),
        "nginx's revocd_agent upstream is the agent at {agent_name}:{http_port}"
    );
    assert!(
        site.contains("server demo-upstream:80;") && services.contains_key("demo-upstream"),
        "nginx proxies to demo-upstream"
    );
    assert!(
        site.contains("include revocd-auth.conf;") && site.contains("include revocd-protect.conf;")
    );
}

/// The file behind `/run/secrets/<name>` of `service`, which must list the
/// secret.
fn compose_secret_file(compose: &Json, service: &str, path: &str) -> PathBuf {
    let name = path
        .strip_prefix("/run/secrets/")
        .unwrap_or_else(|| panic!("service {service}: {path} is not a compose secret"));
    let listed = strings(&compose["services"][service]["secrets"], "secrets");
    assert!(
        listed.iter().any(|listed| listed == name),
        "service {service} uses secret {name} without listing it"
    );
    let file = str_of(&compose["secrets"][name]["file"], name);
    let file = deploy_dir().join(file.trim_start_matches("./"));
    assert!(
        file.is_file(),
        "secret {name}: {} is missing",
        file.display()
    );
    file
}

fn trimmed_file(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[test]
fn compose_example_keys_fit_the_api_keys_file() {
    let access = Access::from_toml(&read("compose/api-keys.toml")).expect("api-keys.toml parses");
    let caller = |file: &str| {
        let key = trimmed_file(&deploy_dir().join(file));
        access
            .caller(Some(format!("Bearer {key}").as_bytes()), None)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .unwrap_or_else(|| panic!("{file}: no caller"))
    };
    let agent = caller("compose/agent.key");
    assert!(agent.has_any(&[Role::Subscribe]), "the agent may subscribe");
    assert!(
        !agent.has_any(&[Role::Revoke]),
        "the agent key cannot revoke"
    );
    assert!(caller("compose/operator.key").has_any(&[Role::Admin]));
    let secret = trimmed_file(&deploy_dir().join("compose/jwt-hs256.secret"));
    assert!(secret.len() >= 32, "an HS256 secret of at least 32 bytes");
    for file in [
        "compose/agent.key",
        "compose/operator.key",
        "compose/jwt-hs256.secret",
    ] {
        assert!(
            read(file).contains("REPLACE-ME"),
            "deploy/{file} is marked as an example to replace"
        );
    }
}

// === Kubernetes ===

fn labels_match(selector: &Json, labels: &Json, what: &str) {
    let selector = selector.as_object().expect("a selector");
    assert!(!selector.is_empty(), "{what}: empty selector");
    for (key, value) in selector {
        assert_eq!(&labels[key], value, "{what}: selector {key} does not match");
    }
}

/// The Secret key mounted at `path` in `pod` (via a volume with `items`
/// or a whole-Secret volume), checked to exist in the Secret.
fn k8s_secret_file(objects: &[(String, Json)], pod: &Json, container: &Json, path: &str) {
    let (dir, file) = path.rsplit_once('/').expect("an absolute path");
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|mount| mount["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {dir} for {path}"));
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|volume| volume["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
    let secret_name = str_of(&volume["secret"]["secretName"], "secretName");
    let key = match volume["secret"]["items"].as_array() {
        Some(items) => items
            .iter()
            .find(|item| item["path"] == file)
            .map(|item| str_of(&item["key"], "item key").to_owned())
            .unwrap_or_else(|| panic!("Secret volume {secret_name} has no item {file}")),
        None => file.to_owned(),
    };
    let secret = k8s_object(objects, "Secret", secret_name);
    assert!(
        secret["stringData"].get(&key).is_some() || secret["data"].get(&key).is_some(),
        "Secret {secret_name} has no key {key} (for {path})"
    );
}

#[test]
fn k8s_server_has_grpc_probes_a_service_and_a_disruption_budget() {
    let objects = k8s_objects();
    let deployment = k8s_object(&objects, "Deployment", "revocd");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    labels_match(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels,
        "Deployment",
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);

    let [container] = containers(deployment).as_slice() else {
        panic!("one container in the revocd pod");
    };
    assert_eq!(container["args"][0], "serve");
    assert_eq!(container["ports"][0]["containerPort"], 50051);
    assert_eq!(
        container["readinessProbe"]["grpc"]["port"], 50051,
        "readiness is the native gRPC probe (grpc.health.v1)"
    );
    assert!(
        container["livenessProbe"].is_object(),
        "the container has a liveness probe"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert!(container["resources"]["requests"].is_object());
    assert!(container["resources"]["limits"]["memory"].is_string());

    // Where the server listens and what it loads: from the ConfigMap, with
    // each file it names mounted from the Secret.
    let invocation = k8s_invocations(&objects)
        .into_iter()
        .find(|invocation| invocation.program == Program::Serve)
        .expect("the server's invocation");
    assert_eq!(
        setting(&invocation, "--listen", "REVOCD_LISTEN"),
        Some("0.0.0.0:50051")
    );
    for (flag, env) in [
        ("--api-keys-file", "REVOCD_API_KEYS_FILE"),
        ("--jwt-hs256-secret-file", "REVOCD_JWT_HS256_SECRET_FILE"),
    ] {
        let path = setting(&invocation, flag, env).unwrap_or_else(|| panic!("{flag}"));
        k8s_secret_file(&objects, pod, container, path);
    }
    let redis = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|var| var["name"] == "REVOCD_REDIS_URL")
        .expect("REVOCD_REDIS_URL");
    let reference = &redis["valueFrom"]["secretKeyRef"];
    let secret = k8s_object(&objects, "Secret", str_of(&reference["name"], "secret"));
    assert!(secret["stringData"]
        .get(str_of(&reference["key"], "key"))
        .is_some());

    let service = k8s_object(&objects, "Service", "revocd");
    labels_match(&service["spec"]["selector"], pod_labels, "Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 50051);

    let budget = k8s_object(&objects, "PodDisruptionBudget", "revocd");
    assert_eq!(budget["apiVersion"], "policy/v1");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    labels_match(
        &budget["spec"]["selector"]["matchLabels"],
        pod_labels,
        "PDB",
    );
}

#[test]
fn k8s_sidecar_agent_is_ready_on_healthz_and_serves_nginx_on_loopback() {
    let objects = k8s_objects();
    let deployment = k8s_object(&objects, "Deployment", "demo-app");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let agent = containers(deployment)
        .iter()
        .find(|container| container["args"][0] == "agent")
        .expect("a revocd agent container");
    let invocation = k8s_invocations(&objects)
        .into_iter()
        .find(|invocation| invocation.program == Program::Agent)
        .expect("the agent's invocation");

    let metrics = flag_value(&invocation.args, "--metrics-listen").expect("--metrics-listen");
    let probe = &agent["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/healthz");
    let probe_port = match &probe["port"] {
        Json::String(name) => agent["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|port| port["name"] == *name)
            .map(|port| port["containerPort"].clone())
            .expect("the named probe port"),
        number => number.clone(),
    };
    assert_eq!(
        probe_port,
        port_of(metrics),
        "readiness asks the metrics port"
    );

    let http = flag_value(&invocation.args, "--http-listen").expect("--http-listen");
    assert!(
        http.starts_with("127.0.0.1:"),
        "forward-auth stays in the pod"
    );
    let nginx = k8s_object(&objects, "ConfigMap", "demo-app-nginx");
    let site = str_of(&nginx["data"]["default.conf"], "default.conf");
    assert!(
        site.contains(&format!("server {http};")),
        "nginx's revocd_agent upstream is the agent at {http}"
    );
    // The snippets come from deploy/nginx/ (a ConfigMap made from the files,
    // as the manifest's comment says), mounted where the site includes them.
    let nginx_container = containers(deployment)
        .iter()
        .find(|container| container["name"] == "nginx")
        .expect("an nginx container");
    let comment = read("k8s/agent-sidecar.yaml");
    for snippet in ["revocd-auth.conf", "revocd-protect.conf"] {
        assert!(
            deploy_dir().join("nginx").join(snippet).is_file(),
            "deploy/nginx/{snippet}"
        );
        assert!(
            comment.contains(&format!("--from-file=deploy/nginx/{snippet}")),
            "the kubectl command creates revocd-nginx from deploy/nginx/{snippet}"
        );
        let include = site
            .lines()
            .map(str::trim)
            .find_map(|line| {
                line.strip_prefix("include ")
                    .and_then(|path| path.strip_suffix(&format!("{snippet};")))
            })
            .unwrap_or_else(|| panic!("the site includes {snippet}"));
        let directory = format!("/etc/nginx/{}", include.trim_end_matches('/'));
        let mount = nginx_container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|mount| mount["mountPath"] == directory)
            .unwrap_or_else(|| panic!("nothing mounted at {directory}"));
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|volume| volume["name"] == mount["name"])
            .expect("the snippets' volume");
        assert_eq!(volume["configMap"]["name"], "revocd-nginx");
    }

    assert_eq!(
        setting(&invocation, "--server", "REVOCD_SERVER"),
        Some("http://revocd:50051"),
        "the agent follows the revocd Service"
    );
    k8s_object(&objects, "Service", "revocd");
    for flag in ["--api-key-file", "--jwt-hs256-secret-file"] {
        let path = flag_value(&invocation.args, flag).unwrap_or_else(|| panic!("{flag}"));
        k8s_secret_file(&objects, pod, agent, path);
    }
    assert_eq!(agent["securityContext"]["readOnlyRootFilesystem"], true);
}

#[test]
fn k8s_secrets_are_placeholders_that_grant_nothing() {
    let objects = k8s_objects();
    let server = k8s_object(&objects, "Secret", "revocd-server");
    let keys = str_of(&server["stringData"]["api-keys.toml"], "api-keys.toml");
    let access = Access::from_toml(keys).expect("the Secret's api-keys.toml parses");
    assert!(
        access.caller(Some(b"Bearer REPLACE-ME"), None).is_err(),
        "the placeholder agent key is not accepted"
    );
    assert!(keys.contains("REPLACE-ME"));
    let agent = k8s_object(&objects, "Secret", "revocd-agent");
    for secret in [server, agent] {
        assert_eq!(
            secret["stringData"]["jwt-hs256.secret"], "",
            "no usable JWT secret is shipped: an empty one stops revocd at start"
        );
    }
}

/// The comments above promise that the empty placeholder secret stops
/// both programs at start; they exit with the configuration status (64).
#[test]
fn an_empty_jwt_secret_stops_serve_and_agent_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("jwt-hs256.secret");
    std::fs::write(&secret, "").expect("secret");
    let keys = dir.path().join("api-keys.toml");
    std::fs::write(&keys, read("compose/api-keys.toml")).expect("keys");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_revocd"))
            .args(args)
            .env_clear()
            .output()
            .expect("running revocd")
    };
    let secret = secret.to_str().expect("UTF-8 path");
    let serve = run(&[
        "serve",
        "--api-keys-file",
        keys.to_str().expect("UTF-8 path"),
        "--jwt-hs256-secret-file",
        secret,
        "--listen",
        "127.0.0.1:0",
    ]);
    let agent = run(&[
        "agent",
        "--jwt-hs256-secret-file",
        secret,
        "--http-listen",
        "127.0.0.1:0",
    ]);
    for (name, output) in [("serve", serve), ("agent", agent)] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "revocd {name}: {stderr}");
        assert!(stderr.contains("empty"), "revocd {name}: {stderr}");
    }
}

// === the settings file ===

/// `deploy/revocd.toml` loads for both subcommands. revocd itself checks
/// the file (exit 64 otherwise): every key a setting of the table it is in,
/// every value one its flag accepts, so a flag renamed in the code fails
/// here. The file's settings must also be the ones in force.
#[test]
fn revocd_toml_loads_for_serve_and_agent() {
    let path = deploy_dir().join("revocd.toml");
    for subcommand in ["serve", "agent"] {
        let output = Command::new(env!("CARGO_BIN_EXE_revocd"))
            .args([subcommand, "--config"])
            .arg(&path)
            .arg("--print-config")
            .env_clear()
            .output()
            .expect("running revocd");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "revocd {subcommand} --config deploy/revocd.toml: {stderr}"
        );
        let printed = String::from_utf8(output.stdout).expect("UTF-8 output");
        let from_file = printed.matches("\n# file ").count();
        assert!(
            from_file >= 8,
            "revocd {subcommand}: {from_file} settings from deploy/revocd.toml:\n{printed}"
        );
    }
}

// === Envoy ===

/// The Envoy protos shipped in the `envoy-types` crate: in Cargo's registry
/// sources (the version `Cargo.lock` names), else wherever `cargo metadata`
/// says (a vendor directory, another `CARGO_HOME`).
fn envoy_proto_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock: toml::Table = std::fs::read_to_string(manifest_dir.join("Cargo.lock"))
        .ok()
        .and_then(|text| toml::from_str(&text).ok())
        .expect("Cargo.lock parses");
    let version = lock["package"]
        .as_array()
        .expect("[[package]]")
        .iter()
        .find(|package| package["name"].as_str() == Some("envoy-types"))
        .and_then(|package| package["version"].as_str())
        .expect("envoy-types in Cargo.lock")
        .to_owned();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    let registry = cargo_home.map(|home| home.join("registry").join("src"));
    let in_registry = registry
        .and_then(|registry| std::fs::read_dir(registry).ok())
        .into_iter()
        .flatten()
        .flatten()
        .map(|index| {
            index
                .path()
                .join(format!("envoy-types-{version}"))
                .join("proto")
        })
        .find(|proto| proto.is_dir());
    if let Some(proto) = in_registry {
        return proto;
    }
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(manifest_dir.join("Cargo.toml"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo metadata");
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: Json = serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let manifest = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|package| package["name"] == "envoy-types")
        .map(|package| str_of(&package["manifest_path"], "manifest_path").to_owned())
        .expect("envoy-types is a dependency");
    Path::new(&manifest)
        .parent()
        .expect("the crate's directory")
        .join("proto")
}

/// Envoy's `Bootstrap` message, with every type the config names in a
/// `typed_config` (Envoy reads its YAML by the protobuf JSON mapping).
static BOOTSTRAP: LazyLock<prost_reflect::MessageDescriptor> = LazyLock::new(|| {
    let root = envoy_proto_root();
    let includes = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
    ]
    .map(|dir| root.join(dir));
    let files = [
        "envoy/config/bootstrap/v3/bootstrap.proto",
        "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
        "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
        "envoy/extensions/filters/http/header_mutation/v3/header_mutation.proto",
        "envoy/extensions/filters/http/router/v3/router.proto",
        "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    ];
    protox::Compiler::new(includes)
        .expect("proto include paths")
        .include_imports(true)
        .open_files(files)
        .expect("compiling Envoy's protos")
        .descriptor_pool()
        .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
        .expect("Bootstrap")
});

#[test]
fn envoy_config_decodes_as_an_envoy_bootstrap() {
    let config = yaml("envoy/envoy.yaml");
    // Unknown fields and unknown `@type`s are errors, as in Envoy.
    let decoded = prost_reflect::DynamicMessage::deserialize(BOOTSTRAP.clone(), config.clone())
        .unwrap_or_else(|e| panic!("deploy/envoy/envoy.yaml is not a valid Bootstrap: {e}"));
    let json = serde_json::to_value(&decoded).expect("re-encoding");
    assert!(json["staticResources"]["listeners"].is_array(), "{json}");

    // The ext_authz filter: gRPC (v3) to a cluster at the agent's address,
    // failing closed, before the router.
    let manager = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    let filters = manager["http_filters"].as_array().expect("http_filters");
    let names: Vec<&str> = filters
        .iter()
        .map(|filter| str_of(&filter["name"], "filter name"))
        .collect();
    let authz_at = names
        .iter()
        .position(|name| *name == "envoy.filters.http.ext_authz")
        .expect("an ext_authz filter");
    assert_eq!(names.last(), Some(&"envoy.filters.http.router"));
    assert!(authz_at < names.len() - 1);
    let authz = &filters[authz_at]["typed_config"];
    assert_eq!(authz["transport_api_version"], "V3");
    assert_eq!(authz["failure_mode_allow"], false);
    let cluster_name = str_of(
        &authz["grpc_service"]["envoy_grpc"]["cluster_name"],
        "cluster",
    );
    let clusters = config["static_resources"]["clusters"]
        .as_array()
        .expect("clusters");
    let cluster = |name: &str| {
        clusters
            .iter()
            .find(|cluster| cluster["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name}"))
    };
    let agent = cluster(cluster_name);
    let address = &agent["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    let agent_address = format!(
        "{}:{}",
        str_of(&address["address"], "address"),
        address["port_value"]
    );
    assert_eq!(agent_address, "127.0.0.1:9191");
    assert!(
        agent["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
            ["http2_protocol_options"]
            .is_object(),
        "gRPC needs HTTP/2 to the agent"
    );
    // The documented agent command listens where the cluster points.
    let documented = prose_command_lines(&read("envoy/envoy.yaml"));
    assert!(
        documented
            .iter()
            .any(|(program, flags)| *program == Program::Agent
                && flags.iter().any(|flag| flag == "--ext-authz-listen")),
        "envoy.yaml documents the agent's --ext-authz-listen"
    );
    assert!(read("envoy/envoy.yaml").contains(&format!("--ext-authz-listen {agent_address}")));

    // Every route goes to a defined cluster.
    for host in manager["route_config"]["virtual_hosts"]
        .as_array()
        .expect("virtual_hosts")
    {
        for route in host["routes"].as_array().expect("routes") {
            cluster(str_of(&route["route"]["cluster"], "route cluster"));
        }
    }
}

#[test]
fn the_envoy_check_rejects_misspelt_fields() {
    let mut config = yaml("envoy/envoy.yaml");
    config["static_resources"]["clusters"][0]["conect_timeout"] = "1s".into();
    let error = prost_reflect::DynamicMessage::deserialize(BOOTSTRAP.clone(), config)
        .expect_err("an unknown field is refused");
    assert!(error.to_string().contains("conect_timeout"), "{error}");

    let mut config = yaml("envoy/envoy.yaml");
    let filter = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][1]["typed_config"];
    filter["failure_mode_alow"] = false.into();
    prost_reflect::DynamicMessage::deserialize(BOOTSTRAP.clone(), config)
        .expect_err("an unknown field inside a typed_config is refused");
}

// === Traefik ===

#[test]
fn traefik_forward_auth_points_at_the_compose_agent() {
    let config = yaml("traefik/dynamic.yaml");
    let middlewares = config["http"]["middlewares"]
        .as_object()
        .expect("http.middlewares");
    let forward = middlewares
        .values()
        .find_map(|middleware| middleware.get("forwardAuth"))
        .expect("a forwardAuth middleware");
    let address = str_of(&forward["address"], "forwardAuth address");
    assert_eq!(address, "http://revocd-agent:8081");
    assert_eq!(
        strings(&forward["authResponseHeaders"], "authResponseHeaders"),
        ["X-Auth-Subject", "X-Auth-Jti", "X-Auth-Issuer"]
    );

    // The same name and port as the compose agent.
    let compose = compose();
    let agent = compose_invocations(&compose)
        .into_iter()
        .find(|invocation| invocation.program == Program::Agent)
        .expect("the compose agent");
    let name = agent.origin.rsplit(' ').next().expect("service name");
    let port = port_of(flag_value(&agent.args, "--http-listen").expect("--http-listen"));
    assert_eq!(address, format!("http://{name}:{port}"));

    // Chains name defined middlewares; routers name defined middlewares
    // and services.
    for (name, middleware) in middlewares {
        if let Some(chain) = middleware.get("chain") {
            for link in strings(&chain["middlewares"], name) {
                assert!(middlewares.contains_key(&link), "chain {name}: no {link}");
            }
        }
    }
    for (name, router) in config["http"]["routers"].as_object().expect("routers") {
        for middleware in strings(&router["middlewares"], name) {
            assert!(
                middlewares.contains_key(&middleware),
                "router {name}: no {middleware}"
            );
        }
        let service = str_of(&router["service"], name);
        assert!(
            config["http"]["services"].get(service).is_some(),
            "router {name}: no {service}"
        );
    }
}

// === Grafana and Prometheus ===

/// What the code records, read from `src/`: every metric name (a
/// `"revocd_..."` string literal), the histograms among them (recorded
/// with `histogram!`, so Prometheus also has `_bucket`, `_sum` and
/// `_count`), and every label name given to a metrics macro.
#[derive(Debug, Default)]
struct RecordedMetrics {
    names: BTreeSet<String>,
    histograms: BTreeSet<String>,
    labels: BTreeSet<String>,
}

/// Labels Prometheus itself adds: the target's, and a histogram's bucket.
const PROMETHEUS_LABELS: [&str; 3] = ["instance", "job", "le"];

static RECORDED: LazyLock<RecordedMetrics> = LazyLock::new(|| {
    let mut recorded = RecordedMetrics::default();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for path in files_under(&src) {
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("reading src/");
        recorded.add_source(&text);
    }
    assert!(
        recorded.names.len() >= 20 && !recorded.histograms.is_empty(),
        "no metric names found in src/: {recorded:?}"
    );
    recorded
});

impl RecordedMetrics {
    fn add_source(&mut self, text: &str) {
        for (at, _) in text.match_indices("\"revocd_") {
            let name: String = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if text[at + 1 + name.len()..].starts_with('"') {
                self.names.insert(name);
            }
        }
        for kind in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(kind) {
                let call = macro_arguments(&text[at + kind.len()..]);
                if kind == "histogram!(" {
                    if let Some(name) = string_literals(call).first() {
                        self.histograms.insert(name.clone());
                    }
                }
                // `"label" => value` pairs.
                for (arrow, _) in call.match_indices("=>") {
                    if let Some(label) = string_literals(&call[..arrow]).pop() {
                        self.labels.insert(label);
                    }
                }
            }
        }
    }

    /// The label names a query may use.
    fn knows_label(&self, label: &str) -> bool {
        self.labels.contains(label) || PROMETHEUS_LABELS.contains(&label)
    }
}

/// The text up to the parenthesis that closes a macro call.
fn macro_arguments(text: &str) -> &str {
    let mut depth = 0;
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return &text[..at],
            ')' => depth -= 1,
            _ => {}
        }
    }
    text
}

/// The contents of the `"..."` literals in `text` (no escapes needed).
fn string_literals(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `revocd_*` metric names a PromQL expression reads.
fn promql_metrics(expr: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for (at, _) in expr.match_indices("revocd_") {
        if expr[..at].chars().next_back().is_some_and(is_word_char) {
            continue;
        }
        let end = expr[at..]
            .find(|c: char| !is_word_char(c))
            .map_or(expr.len(), |len| at + len);
        found.push(&expr[at..end]);
    }
    found
}

/// The label names a PromQL expression uses: in selectors (`{a="x"}`) and
/// in `by`, `without`, `on`, `ignoring` and `group_*` clauses.
fn promql_labels(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("a closed selector") + open;
        for matcher in rest[open + 1..close].split(',') {
            let name = matcher.split(['=', '!']).next().unwrap_or_default().trim();
            if !name.is_empty() {
                found.push(name.to_owned());
            }
        }
        rest = &rest[close..];
    }
    for keyword in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        for (at, _) in expr.match_indices(keyword) {
            let before = expr[..at].chars().next_back();
            let after = expr[at + keyword.len()..].trim_start();
            if before.is_some_and(is_word_char) || !after.starts_with('(') {
                continue;
            }
            let list = &after[1..after.find(')').expect("a closed label list")];
            found.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    found
}

/// The names inside `{{ ... }}` templates that are labels: `{{method}}`
/// (a Grafana legend) or `{{ $labels.kind }}` (an alert annotation).
fn template_labels(text: &str) -> Vec<String> {
    text.split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}"))
        .filter_map(|(inside, _)| {
            let inside = inside.trim();
            let name = inside.strip_prefix("$labels.").unwrap_or(inside);
            name.chars().all(is_word_char).then(|| name.to_owned())
        })
        .collect()
}

impl Findings {
    /// Every metric and label `expr` uses is one the code records.
    fn promql(&mut self, expr: &str, origin: &str) {
        let recorded = &*RECORDED;
        let metrics = promql_metrics(expr);
        if metrics.is_empty() {
            self.0
                .push(format!("{origin}: reads no revocd_* metric: {expr}"));
        }
        for metric in metrics {
            let histogram_series = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| metric.strip_suffix(suffix))
                .any(|base| recorded.histograms.contains(base));
            if !recorded.names.contains(metric) && !histogram_series {
                self.0
                    .push(format!("{origin}: src/ records no metric {metric}"));
            }
        }
        for label in promql_labels(expr) {
            if !recorded.knows_label(&label) {
                self.0
                    .push(format!("{origin}: no metric has a label {label}"));
            }
        }
    }

    /// Every label a template names is one the code records.
    fn templates(&mut self, text: &str, origin: &str) {
        for label in template_labels(text) {
            if !RECORDED.knows_label(&label) {
                self.0
                    .push(format!("{origin}: template names no label: {label}"));
            }
        }
    }
}

fn dashboard() -> Json {
    serde_json::from_str(&read("grafana/revocd.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/revocd.json: {e}"))
}

/// The dashboard's panels, those inside rows included; rows themselves
/// are left out.
fn dashboard_panels(dashboard: &Json) -> Vec<&Json> {
    let mut panels = Vec::new();
    let mut pending: Vec<&Json> = dashboard["panels"]
        .as_array()
        .expect("deploy/grafana/revocd.json: panels")
        .iter()
        .collect();
    while let Some(panel) = pending.pop() {
        if panel["type"] == "row" {
            pending.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            panels.push(panel);
        }
    }
    panels
}

/// Every `revocd_*` metric the expressions of `exprs` read.
fn metrics_read<'a>(exprs: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    exprs
        .into_iter()
        .flat_map(promql_metrics)
        .map(str::to_owned)
        .collect()
}

#[test]
fn grafana_dashboard_queries_metrics_the_code_records() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables");
    assert!(
        variables
            .iter()
            .any(|variable| variable["name"] == "datasource"
                && variable["type"] == "datasource"
                && variable["query"] == "prometheus"),
        "a Prometheus `datasource` variable: {variables:?}"
    );

    let mut findings = Findings::default();
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    let panels = dashboard_panels(&dashboard);
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let origin = format!("deploy/grafana/revocd.json, panel {title:?}");
        if title.is_empty() {
            findings.0.push(format!("{origin}: no title"));
        }
        if !ids.insert(panel["id"].to_string()) {
            findings
                .0
                .push(format!("{origin}: id {} used twice", panel["id"]));
        }
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        if !x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24) {
            findings
                .0
                .push(format!("{origin}: outside the 24-column grid"));
        }
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if targets.is_empty() {
            findings.0.push(format!("{origin}: no query"));
        }
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            if expr.is_empty() {
                findings.0.push(format!("{origin}: a target without expr"));
            }
            findings.promql(expr, &origin);
            findings.templates(target["legendFormat"].as_str().unwrap_or(""), &origin);
            exprs.push(expr);
        }
        for datasource in [&panel["datasource"]]
            .into_iter()
            .chain(targets.iter().map(|t| &t["datasource"]))
        {
            if datasource["uid"] != "${datasource}" {
                findings.0.push(format!(
                    "{origin}: datasource {datasource}, not the ${{datasource}} variable"
                ));
            }
        }
    }
    findings.assert_none("deploy/grafana/revocd.json");

    // What the dashboard is for: each of these is on it.
    let read = metrics_read(exprs.iter().copied());
    for metric in [
        "revocd_revocations_total",
        "revocd_rpc_requests_total",
        "revocd_rpc_duration_seconds_bucket",
        "revocd_propagation_delay_seconds_bucket",
        "revocd_change_log_lag_seconds_bucket",
        "revocd_agent_filter_staleness_seconds",
        "revocd_filter_fill_ratio",
        "revocd_filter_estimated_fp_rate",
        "revocd_filter_fp_rate_target",
        "revocd_revocations_live",
        "revocd_subscribers_connected",
        "revocd_filter_snapshots_sent_total",
        "revocd_filter_deltas_sent_total",
        "revocd_subscriber_rebases_total",
        "revocd_store_errors_total",
        "revocd_change_log_errors_total",
    ] {
        assert!(read.contains(metric), "no panel shows {metric}");
    }

    // The queries as recording rules, for promtool's PromQL parser
    // (Grafana's `$__rate_interval` becomes a plain range).
    let dir = tempfile::tempdir().expect("temp dir");
    let rules: Vec<Json> = exprs
        .iter()
        .enumerate()
        .map(|(index, expr)| {
            serde_json::json!({
                "record": format!("dashboard:query_{index}"),
                "expr": expr.replace("$__rate_interval", "5m"),
            })
        })
        .collect();
    let file = dir.path().join("dashboard-queries.yml");
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, groups.to_string()).expect("writing the queries");
    promtool_check_rules(&file);
}

fn alert_rules() -> Vec<Json> {
    let rules = yaml("prometheus/alerts.yml");
    let groups = rules["groups"]
        .as_array()
        .expect("deploy/prometheus/alerts.yml: groups");
    assert!(!groups.is_empty(), "no rule groups");
    groups
        .iter()
        .flat_map(|group| {
            assert!(group["name"].is_string(), "a group without a name");
            group["rules"]
                .as_array()
                .unwrap_or_else(|| panic!("group {}: no rules", group["name"]))
                .iter()
                .cloned()
        })
        .collect()
}

/// A Prometheus duration: digits and a unit (`30s`, `5m`, `1h`).
fn is_duration(text: &str) -> bool {
    let digits = text.trim_end_matches(|c: char| "smhdwy".contains(c));
    digits.len() + 1 == text.len()
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn prometheus_alerts_are_complete_and_use_metrics_the_code_records() {
    let mut findings = Findings::default();
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    let rules = alert_rules();
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap_or_default();
        let origin = format!("deploy/prometheus/alerts.yml, alert {name:?}");
        if name.is_empty() || !names.insert(name.to_owned()) {
            findings.0.push(format!("{origin}: unnamed or named twice"));
        }
        let expr = rule["expr"].as_str().unwrap_or_default();
        findings.promql(expr, &origin);
        exprs.push(expr.to_owned());
        if !rule["for"].as_str().is_some_and(is_duration) {
            findings.0.push(format!("{origin}: for: {}", rule["for"]));
        }
        let severity = rule["labels"]["severity"].as_str();
        if !matches!(severity, Some("warning" | "critical")) {
            findings.0.push(format!("{origin}: severity {severity:?}"));
        }
        for field in ["summary", "description"] {
            let text = rule["annotations"][field].as_str().unwrap_or_default();
            if text.trim().is_empty() {
                findings.0.push(format!("{origin}: no annotations.{field}"));
            }
            findings.templates(text, &origin);
        }
    }
    findings.assert_none("deploy/prometheus/alerts.yml");

    // The alerts the issue asks for: stale gateways, a filter near its
    // bound, Redis errors.
    let read = metrics_read(exprs.iter().map(String::as_str));
    for metric in [
        "revocd_agent_filter_staleness_seconds",
        "revocd_agent_ready",
        "revocd_filter_estimated_fp_rate",
        "revocd_store_errors_total",
        "revocd_change_log_errors_total",
        "revocd_propagation_delay_seconds_bucket",
    ] {
        assert!(read.contains(metric), "no alert reads {metric}");
    }

    promtool_check_rules(&deploy_dir().join("prometheus/alerts.yml"));
}

/// `promtool check rules <path>` must pass, where promtool is installed:
/// it has the last word on PromQL, but the checks above do not need it.
fn promtool_check_rules(path: &Path) {
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "promtool check rules {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => eprintln!("promtool is not installed; checked without it"),
    }
}

#[test]
fn the_metric_check_catches_a_misspelt_metric_or_label() {
    let mut findings = Findings::default();
    findings.promql(
        "histogram_quantile(0.99, sum by (method, le) (rate(revocd_rpc_duration_seconds_bucket{method=\"Revoke\"}[5m])))",
        "ok",
    );
    findings.promql(
        "revocd_filter_estimated_fp_rate > on (instance) revocd_filter_fp_rate_target",
        "ok",
    );
    findings.templates(
        "{{ $labels.kind }} {{method}} {{ $value | humanize }}",
        "ok",
    );
    assert!(findings.0.is_empty(), "{:?}", findings.0);

    findings.promql("rate(revocd_revocation_total[5m])", "bad");
    findings.promql("rate(revocd_revocations_total_bucket[5m])", "bad");
    findings.promql(
        "sum by (status) (rate(revocd_rpc_requests_total[5m]))",
        "bad",
    );
    findings.promql("revocd_store_errors_total{knd=\"unavailable\"}", "bad");
    findings.promql("up == 0", "bad");
    findings.templates("{{ $labels.replica }}", "bad");
    assert_eq!(findings.0.len(), 6, "{:?}", findings.0);
}

// === the README ===

#[test]
fn deploy_readme_names_every_file() {
    let readme = read("README.md");
    for path in files_under(&deploy_dir()) {
        let relative = relative(&path);
        if relative == "README.md" {
            continue;
        }
        let directory = relative
            .rsplit_once('/')
            .map(|(directory, _)| format!("{directory}/"));
        assert!(
            readme.contains(&relative) || directory.is_some_and(|d| readme.contains(&d)),
            "deploy/README.md does not mention {relative}"
        );
    }
}

// === the compose stack, rehearsed without Docker ===

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 `GET` with `headers`; the status and the lower-cased
/// response headers.
fn http_get(port: u16, headers: &[(&str, &str)]) -> (u16, BTreeMap<String, String>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut request = "GET /orders/42 HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n".to_owned();
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("sending");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reading");
    let mut lines = response.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response:?}"));
    let headers = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers)
}

/// The `nginx` binary: on `PATH`, else Debian's `/usr/sbin/nginx`
/// (`.ci/run` installs it).
fn nginx_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .expect("nginx is installed (apt-get install -y nginx)")
}

/// An nginx prefix directory: `nginx.conf` including `site` (an http-level
/// site), deploy/nginx/'s two snippets in `snippet_dir` (relative to the
/// prefix), and a stand-in application on `app_port` that answers 200 and
/// echoes the X-Auth-* headers it received as X-Seen-Auth-*.
fn nginx_prefix(site: &str, snippet_dir: &str, app_port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir for nginx");
    let d = dir.path().to_str().expect("UTF-8 temp path").to_owned();
    let snippets = dir.path().join(snippet_dir);
    std::fs::create_dir_all(&snippets).expect("snippet dir");
    for snippet in ["revocd-auth.conf", "revocd-protect.conf"] {
        std::fs::write(snippets.join(snippet), read(&format!("nginx/{snippet}"))).expect("snippet");
    }
    std::fs::write(dir.path().join("site.conf"), site).expect("site");
    let main = format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    include site.conf;
    server {{
        listen 127.0.0.1:{app_port};
        location / {{
            add_header X-Seen-Auth-Subject $http_x_auth_subject always;
            return 200 "app\n";
        }}
    }}
}}
"#
    );
    std::fs::write(dir.path().join("nginx.conf"), main).expect("nginx.conf");
    dir
}

fn nginx_command(prefix: &Path) -> Command {
    let mut command = Command::new(nginx_binary());
    command
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .arg("-e")
        .arg(prefix.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// The Kubernetes sidecar's nginx site, with deploy/nginx/'s snippets where
/// the pod mounts them, passes `nginx -t`.
#[test]
fn k8s_sidecar_nginx_site_passes_nginx_t() {
    let objects = k8s_objects();
    let nginx = k8s_object(&objects, "ConfigMap", "demo-app-nginx");
    let site = str_of(&nginx["data"]["default.conf"], "default.conf");
    // The pod mounts the snippets at /etc/nginx/revocd; includes resolve
    // in the directory of nginx.conf (here, the prefix).
    let prefix = nginx_prefix(site, "revocd", free_port());
    let output = nginx_command(prefix.path())
        .arg("-t")
        .output()
        .expect("running nginx -t");
    assert!(
        output.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn compose_stack_rehearsed_as_local_processes() {
    let compose = compose();
    let services = compose_services(&compose);

    // Redis with the compose file's own flags (AOF), on a free port.
    let redis_flags = strings(&services["redis"]["command"], "redis command");
    assert_eq!(redis_flags[0], "redis-server");
    let flags: Vec<&str> = redis_flags[1..].iter().map(String::as_str).collect();
    let redis = RedisServer::start_with(&flags);

    // Each service's in-network addresses, moved to free loopback ports.
    let invocations = compose_invocations(&compose);
    let mut rewrites: Vec<(String, String)> = vec![(
        "redis:6379".to_owned(),
        format!("127.0.0.1:{}", redis.port()),
    )];
    let mut own_ports: BTreeMap<String, Vec<(u16, u16)>> = BTreeMap::new();
    for invocation in &invocations {
        let name = invocation
            .origin
            .rsplit(' ')
            .next()
            .expect("name")
            .to_owned();
        let listens: Vec<&str> = match invocation.program {
            Program::Serve => {
                vec![setting(invocation, "--listen", "REVOCD_LISTEN").expect("listen")]
            }
            _ => ["--http-listen", "--metrics-listen", "--ext-authz-listen"]
                .iter()
                .filter_map(|flag| flag_value(&invocation.args, flag))
                .collect(),
        };
        for listen in listens {
            let port = port_of(listen);
            let local = free_port();
            rewrites.push((format!("{name}:{port}"), format!("127.0.0.1:{local}")));
            own_ports
                .entry(name.clone())
                .or_default()
                .push((port, local));
        }
    }
    for (name, secret) in compose["secrets"].as_object().expect("secrets") {
        let file = deploy_dir().join(str_of(&secret["file"], name).trim_start_matches("./"));
        rewrites.push((
            format!("/run/secrets/{name}"),
            file.to_str().expect("UTF-8 path").to_owned(),
        ));
    }
    let localize = |name: &str, text: &str| -> String {
        let mut text = text.to_owned();
        for (from, to) in &rewrites {
            text = text.replace(from, to);
        }
        for (port, local) in own_ports.get(name).into_iter().flatten() {
            text = text
                .replace(&format!("0.0.0.0:{port}"), &format!("127.0.0.1:{local}"))
                .replace(&format!("127.0.0.1/{port}"), &format!("127.0.0.1/{local}"));
        }
        text
    };

    // Start every revocd service as the compose file says.
    let mut running = Vec::new();
    for invocation in &invocations {
        let name = invocation.origin.rsplit(' ').next().expect("name");
        let command = strings(&services[name]["command"], name);
        let mut child = Command::new(env!("CARGO_BIN_EXE_revocd"));
        child
            .args(command.iter().map(|arg| localize(name, arg)))
            .env_clear()
            .env("RUST_LOG", "revocd=error")
            .stdout(Stdio::null());
        for (key, value) in &invocation.env {
            child.env(key, localize(name, value));
        }
        running.push(Running(child.spawn().expect("starting revocd")));
    }

    // The compose healthchecks, run as written (bash included).
    for (name, service) in services {
        if !own_ports.contains_key(name) {
            continue;
        }
        let test = strings(&service["healthcheck"]["test"], name);
        assert_eq!(test[0], "CMD", "service {name}: exec-form healthcheck");
        let argv: Vec<String> = test[1..].iter().map(|arg| localize(name, arg)).collect();
        wait_for(
            &format!("{name}'s healthcheck"),
            Duration::from_secs(30),
            || {
                Command::new(&argv[0])
                    .args(&argv[1..])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            },
        );
    }

    // A token of the compose issuer, signed with the example secret, is
    // allowed; revoked with revoctl and the example operator key, refused.
    let agent = invocations
        .iter()
        .find(|invocation| invocation.program == Program::Agent)
        .expect("agent");
    let agent_name = agent.origin.rsplit(' ').next().expect("name");
    let forward_port = port_of(&localize(
        agent_name,
        flag_value(&agent.args, "--http-listen").expect("--http-listen"),
    ));
    let issuer = setting(agent, "--jwt-issuer", "REVOCD_JWT_ISSUER").expect("issuer");
    let secret = trimmed_file(&deploy_dir().join("compose/jwt-hs256.secret"));
    let now = revocd::time::unix_now();
    let token = sign_with(
        &serde_json::json!({
            "iss": issuer, "sub": "alice", "jti": "compose-rehearsal-1",
            "iat": now, "exp": now + 600,
        }),
        &secret,
    );
    let bearer = format!("Bearer {token}");
    let (status, headers) = http_get(forward_port, &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(
        headers.get("x-auth-subject").map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        headers.get("x-auth-issuer").map(String::as_str),
        Some(issuer)
    );
    let (status, headers) = http_get(forward_port, &[]);
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));

    // nginx with the compose site (deploy/compose/nginx-demo.conf) and
    // deploy/nginx/'s snippets, as the compose file mounts them.
    let app_port = free_port();
    let nginx_port = free_port();
    let site = localize(agent_name, &read("compose/nginx-demo.conf"))
        .replace(
            "server demo-upstream:80;",
            &format!("server 127.0.0.1:{app_port};"),
        )
        .replace("listen 80;", &format!("listen 127.0.0.1:{nginx_port};"));
    let mounts = strings(&services["nginx"]["volumes"], "nginx volumes");
    assert!(mounts
        .iter()
        .any(|mount| mount.ends_with(":/etc/nginx/revocd-auth.conf:ro")));
    let prefix = nginx_prefix(&site, ".", app_port);
    let nginx = Running(
        nginx_command(prefix.path())
            // One process, so killing it at the end leaves no worker behind.
            .args(["-g", "daemon off; master_process off;"])
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx"),
    );
    let error_log = || std::fs::read_to_string(prefix.path().join("error.log")).unwrap_or_default();
    wait_for("nginx to listen", Duration::from_secs(10), || {
        std::fs::metadata(prefix.path().join("nginx.pid")).is_ok_and(|m| m.len() > 0)
            && TcpStream::connect(("127.0.0.1", nginx_port)).is_ok()
    });
    let forged = ("X-Auth-Subject", "mallory");
    let (status, headers) = http_get(nginx_port, &[("Authorization", &bearer), forged]);
    assert_eq!(status, 200, "{headers:?}\n{}", error_log());
    assert_eq!(
        headers.get("x-seen-auth-subject").map(String::as_str),
        Some("alice"),
        "the application sees the agent's subject, never the client's"
    );
    let (status, headers) = http_get(nginx_port, &[forged]);
    assert_eq!(status, 401, "no token, no entry: {headers:?}");
    assert!(headers.contains_key("www-authenticate"));

    // Through the second replica: the agent hears of it whichever it follows.
    let second = invocations
        .iter()
        .filter(|invocation| invocation.program == Program::Serve)
        .nth(1)
        .expect("a second replica");
    let second_name = second.origin.rsplit(' ').next().expect("name");
    let second_address = localize(second_name, &format!("{second_name}:50051"));
    let operator_key = trimmed_file(&deploy_dir().join("compose/operator.key"));
    let revoked = Command::new(env!("CARGO_BIN_EXE_revoctl"))
        .args(["--server", &second_address, "--api-key", &operator_key])
        .args(["revoke", "--token", &token, "--reason", "compose rehearsal"])
        .env_clear()
        .output()
        .expect("running revoctl");
    assert!(
        revoked.status.success(),
        "revoctl revoke: {}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    wait_for(
        "the agent to refuse the revoked token",
        Duration::from_secs(10),
        || http_get(forward_port, &[("Authorization", &bearer)]).0 == 401,
    );
    let (status, _) = http_get(nginx_port, &[("Authorization", &bearer)]);
    assert_eq!(status, 401, "nginx refuses the revoked token");
    drop(nginx);
    drop(running);
}
