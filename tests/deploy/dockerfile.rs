//! `deploy/Dockerfile`: a multi-stage build of both binaries, run
//! unprivileged, and its build context.

use std::collections::BTreeSet;

use crate::files::read;

/// The Dockerfile's instructions, continuation lines joined.
pub fn dockerfile() -> Vec<(String, String)> {
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

pub fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("exec form {text:?}: {e}"))
}

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
        toml::from_str(include_str!("../../Cargo.toml")).expect("Cargo.toml parses");
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
