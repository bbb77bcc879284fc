//! `revocd serve|agent --config FILE` and `--print-config`, run as real
//! processes: which of flag, environment, file and default wins, the errors
//! a bad file gets (exit 64, the key named), secrets kept out of the
//! output, and printed configurations that read back as themselves.
//!
//! Every child starts with no inherited `REVOCD_*` variable, so the
//! machine's environment cannot change a result.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A finished `revocd` run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `revocd <args>` with exactly the `REVOCD_*` variables in `env`.
/// `--print-config` and configuration errors end at once: a run still going
/// after 20 s (serving, say) is killed and fails the test.
fn revocd(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_revocd"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("REVOCD_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("starting revocd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("waiting for revocd").is_none() {
        if Instant::now() > deadline {
            child.kill().expect("killing revocd");
            panic!("revocd {args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("revocd's output");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// A settings file holding `text`, removed on drop.
fn file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("a temporary file");
    file.write_all(text.as_bytes()).expect("writing the file");
    file
}

fn path(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().expect("a UTF-8 temporary path")
}

/// `revocd <subcommand> --config <file> --print-config <extra>`, which must
/// succeed; its output.
fn print_config(subcommand: &str, file: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut args = vec![subcommand, "--config", file, "--print-config"];
    args.extend(extra);
    let run = revocd(&args, env);
    assert_eq!(run.code, Some(0), "revocd {args:?}: {}", run.stderr);
    run.stdout
}

/// The value lines of a printed configuration: no comments, no blanks.
fn values(printed: &str) -> Vec<&str> {
    printed
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

#[test]
fn file_values_apply_when_no_flag_or_variable_sets_them() {
    let config = file("key_prefix = \"file:\"\nlog_retention = 50000\n");
    let printed = print_config("serve", path(&config), &[], &[]);
    let from_file = format!("# file {}\n", path(&config));
    assert!(
        printed.contains(&format!("{from_file}key_prefix = \"file:\"\n")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{from_file}log_retention = 50000\n")),
        "{printed}"
    );
    assert!(printed.contains("# default\nleeway = 60\n"), "{printed}");

    // The value reaches the server, not only the printout: this one fails
    // its start-up checks.
    let config = file("max_token_lifetime = \"10s\"\n");
    let run = revocd(
        &[
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--config",
            path(&config),
        ],
        &[],
    );
    assert_eq!(run.code, Some(64), "{}", run.stderr);
    assert!(run.stderr.contains("max-token-lifetime"), "{}", run.stderr);

    // REVOCD_CONFIG names the file as well as --config does.
    let config = file("key_prefix = \"file:\"\n");
    let run = revocd(
        &["serve", "--print-config"],
        &[("REVOCD_CONFIG", path(&config))],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("\nkey_prefix = \"file:\"\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_environment_beats_the_file_and_a_flag_beats_both() {
    let config = file("key_prefix = \"file:\"\nlog_retention = 50000\n");
    let env = [
        ("REVOCD_KEY_PREFIX", "env:"),
        ("REVOCD_LOG_RETENTION", "60000"),
    ];
    let printed = print_config("serve", path(&config), &[], &env);
    assert!(
        printed.contains("# env REVOCD_KEY_PREFIX\nkey_prefix = \"env:\"\n"),
        "{printed}"
    );
    assert!(
        printed.contains("# env REVOCD_LOG_RETENTION\nlog_retention = 60000\n"),
        "{printed}"
    );

    let printed = print_config("serve", path(&config), &["--key-prefix", "flag:"], &env);
    assert!(
        printed.contains("# flag --key-prefix\nkey_prefix = \"flag:\"\n"),
        "{printed}"
    );
    assert!(printed.contains("log_retention = 60000\n"), "{printed}");
}

#[test]
fn an_unknown_key_exits_64_naming_the_file_line_and_key() {
    let config = file("listen = \"127.0.0.1:0\"\n\nredis_urll = \"redis://h\"\n");
    let run = revocd(&["serve", "--config", path(&config), "--print-config"], &[]);
    assert_eq!(run.code, Some(64), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.starts_with(&format!(
            "error: {}:3: unknown key `redis_urll`",
            path(&config)
        )),
        "{}",
        run.stderr
    );

    // A setting of the other subcommand, at the top level.
    let config = file("redis_url = \"redis://h\"\n");
    let run = revocd(&["agent", "--config", path(&config)], &[]);
    assert_eq!(run.code, Some(64), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`redis_url` is a setting of `serve` only"),
        "{}",
        run.stderr
    );

    let missing = revocd(&["serve", "--config", "/nonexistent/revocd.toml"], &[]);
    assert_eq!(missing.code, Some(64), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("/nonexistent/revocd.toml"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_rejected_value_names_the_key_and_not_a_flag() {
    let config = file("[serve]\nlisten = \"nowhere\"\n");
    let run = revocd(&["serve", "--config", path(&config)], &[]);
    assert_eq!(run.code, Some(64), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(":2: `listen`: invalid value \"nowhere\""),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("--listen"), "{}", run.stderr);

    // A secret's value is not echoed, even when it cannot be parsed.
    let config = file("api_key = \"hunter2\"\nredis_url = redis://:hunter2@h\n");
    let run = revocd(&["agent", "--config", path(&config)], &[]);
    assert_eq!(run.code, Some(64), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
}

/// The one `--print-config` run that has every reason to start: a Redis
/// URL (nothing listens there), addresses to bind. It prints and exits at
/// once, having bound and connected to nothing.
#[test]
fn print_config_redacts_secrets_and_starts_nothing() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let config = file(&format!(
        "redis_url = \"redis://revocd:hunter2@127.0.0.1:1/0\"\nlisten = \"{listen}\"\n\
         metrics_listen = \"127.0.0.1:0\"\napi_keys_file = \"/nonexistent/keys.toml\"\n"
    ));
    let started = Instant::now();
    let run = revocd(&["serve", "--config", path(&config), "--print-config"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        run.stderr.is_empty(),
        "nothing starts, nothing logs: {}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("\n# redis_url = \"redis://revocd:<redacted>@127.0.0.1:1/0\"\n"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
    TcpListener::bind(&listen).expect("--listen's port was left free");

    // A secret from the environment, and one that is no URL.
    let run = revocd(
        &["agent", "--print-config"],
        &[("REVOCD_API_KEY", "hunter2")],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "# env REVOCD_API_KEY (secret: redacted, commented out)\n# api_key = \"<redacted>\"\n"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
}

#[test]
fn print_config_reads_back_as_the_same_configuration() {
    let config = file(
        "jwt_issuer = [\"https://a.example\", \"https://b.example\"]\nleeway = 30\n\
         [serve]\ndev = true\nfilter_fp_rate = 0.01\nmax_token_lifetime = \"7d\"\n\
         [agent]\nserver = [\"http://revocd-1:50051\", \"http://revocd-2:50051\"]\n\
         on_stale = \"fail-closed\"\n",
    );
    let env = [
        ("REVOCD_KEY_PREFIX", "env:"),
        ("REVOCD_GATEWAY_ID", "edge-1"),
    ];
    for subcommand in ["serve", "agent"] {
        let first = print_config(subcommand, path(&config), &["--log-format", "json"], &env);
        let printed = file(&first);
        let second = print_config(subcommand, path(&printed), &[], &[]);
        assert_eq!(
            values(&first),
            values(&second),
            "{subcommand}:\n{first}\n{second}"
        );
        // And the second run took them all from the file.
        assert!(
            !second.contains("# env") && !second.contains("# flag"),
            "{second}"
        );
        assert!(
            values(&second).contains(&"log_format = \"json\""),
            "{second}"
        );
        // Printed from its own output, it prints exactly that again.
        std::fs::write(printed.path(), &second).expect("rewriting the file");
        let third = print_config(subcommand, path(&printed), &[], &[]);
        assert_eq!(second, third);
    }
}

#[test]
fn agent_reads_its_table_and_the_shared_keys() {
    let config = file(
        "jwt_issuer = [\"https://auth.example.com\"]\n\
         [serve]\nredis_url = \"redis://h:6379\"\n\
         [agent]\nserver = [\"http://revocd-1:50051\", \"http://revocd-2:50051\"]\n\
         api_key = \"hunter2\"\n",
    );
    let agent = print_config("agent", path(&config), &[], &[]);
    let from_file = format!("# file {}", path(&config));
    for entry in [
        format!("{from_file}\nserver = [\"http://revocd-1:50051\", \"http://revocd-2:50051\"]\n"),
        format!("{from_file}\njwt_issuer = [\"https://auth.example.com\"]\n"),
        format!("{from_file} (secret: redacted, commented out)\n# api_key = \"<redacted>\"\n"),
    ] {
        assert!(agent.contains(&entry), "{entry:?} missing:\n{agent}");
    }
    assert!(
        !agent.contains("hunter2") && !agent.contains("redis_url"),
        "{agent}"
    );

    let serve = print_config("serve", path(&config), &[], &[]);
    assert!(
        serve.contains("\n# redis_url = \"redis://h:6379\"\n"),
        "{serve}"
    );
    assert!(
        serve.contains("\njwt_issuer = [\"https://auth.example.com\"]\n"),
        "{serve}"
    );

    // A file value that conflicts with a variable is an error, not a guess.
    let config = file("[agent]\napi_key_file = \"/run/secrets/agent.key\"\n");
    let run = revocd(
        &["agent", "--config", path(&config), "--print-config"],
        &[("REVOCD_API_KEY", "hunter2")],
    );
    assert_eq!(run.code, Some(64), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`api_key_file` conflicts with env REVOCD_API_KEY"),
        "{}",
        run.stderr
    );
}

// === keys bound to issuers ===

/// The fixture public key `name`, as a path string.
fn key_fixture(name: &str) -> String {
    format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn issuer_tables_stand_for_the_flags_that_bind_keys() {
    let config = file(
        "jwt_issuer = [\"https://a.example\"]\n\n\
         [[jwt.issuer]]\nissuer = \"https://a.example\"\npublic_key_file = \"/keys/a.pem\"\n\n\
         [[jwt.issuer]]\nissuer = \"https://b.example\"\n\
         jwks_file = [\"/keys/b.json\", \"/keys/b-next.json\"]\n\
         hs256_secret_file = \"/run/secrets/b\"\n",
    );
    let from_file = format!("# file {}\n", path(&config));
    for subcommand in ["serve", "agent"] {
        let printed = print_config(subcommand, path(&config), &[], &[]);
        for entry in [
            "jwt_issuer_key = [\"https://a.example=/keys/a.pem\", \
             \"https://b.example=/keys/b.json\", \"https://b.example=/keys/b-next.json\"]\n",
            "jwt_issuer_hs256_secret_file = [\"https://b.example=/run/secrets/b\"]\n",
            "jwt_issuer = [\"https://a.example\"]\n",
        ] {
            let entry = format!("{from_file}{entry}");
            assert!(
                printed.contains(&entry),
                "{subcommand}: {entry:?} missing:\n{printed}"
            );
        }
        // Printed, the tables are the flags' keys, and read back the same.
        let printed_file = file(&printed);
        let again = print_config(subcommand, path(&printed_file), &[], &[]);
        assert_eq!(values(&printed), values(&again), "{subcommand}");
    }

    // The variable and the flag replace the file's list, as for any list.
    let env = [("REVOCD_JWT_ISSUER_KEY", "https://c.example=/keys/c.pem")];
    let printed = print_config("agent", path(&config), &[], &env);
    assert!(
        printed.contains(
            "# env REVOCD_JWT_ISSUER_KEY\njwt_issuer_key = [\"https://c.example=/keys/c.pem\"]\n"
        ),
        "{printed}"
    );
    let flag = ["--jwt-issuer-key", "https://d.example=/keys/d.pem"];
    let printed = print_config("serve", path(&config), &flag, &env);
    assert!(
        printed.contains(
            "# flag --jwt-issuer-key\njwt_issuer_key = [\"https://d.example=/keys/d.pem\"]\n"
        ),
        "{printed}"
    );
}

#[test]
fn transmitter_tables_stand_for_the_ssf_transmitter_flags() {
    let config = file(
        "[serve]\nssf_audience = \"https://receiver\"\n\n\
         [[ssf.transmitter]]\nissuer = \"https://tx-a\"\njwks_file = \"/keys/tx-a.json\"\n\
         token_issuers = [\"https://a.example\", \"https://a2.example\"]\n\
         poll_url = \"https://tx-a/poll?stream=1\"\npoll_token_file = \"/run/secrets/tx-a\"\n\n\
         [[ssf.transmitter]]\nissuer = \"https://tx-b\"\njwks_file = \"/keys/tx-b.pem\"\n",
    );
    let printed = print_config("serve", path(&config), &[], &[]);
    for entry in [
        "ssf_transmitter = [\"https://tx-a=/keys/tx-a.json\", \"https://tx-b=/keys/tx-b.pem\"]\n",
        "ssf_transmitter_token_issuer = [\"https://tx-a=https://a.example\", \"https://tx-a=https://a2.example\"]\n",
        "ssf_transmitter_poll_url = [\"https://tx-a=https://tx-a/poll?stream=1\"]\n",
        "ssf_transmitter_poll_token_file = [\"https://tx-a=/run/secrets/tx-a\"]\n",
    ] {
        assert!(printed.contains(entry), "{entry:?} missing:\n{printed}");
    }
    let printed_file = file(&printed);
    let again = print_config("serve", path(&printed_file), &[], &[]);
    assert_eq!(values(&printed), values(&again));

    let keyless =
        file("[[ssf.transmitter]]\nissuer = \"https://tx\"\npoll_url = \"https://tx/poll\"\n");
    let refused = revocd(
        &["serve", "--config", path(&keyless), "--print-config"],
        &[],
    );
    assert_eq!(refused.code, Some(64), "{}", refused.stderr);
    let stderr = &refused.stderr;
    assert!(
        stderr
            .contains(":1: [[ssf.transmitter]]: issuer \"https://tx\" has no key: give jwks_file"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_issuer_table_exits_64_naming_the_line() {
    for (text, message) in [
        (
            "[[jwt.issuer]]\nissuer = \"https://a\"\npublic_key = \"/a.pem\"\n",
            ":3: [[jwt.issuer]]: unknown key `public_key`",
        ),
        (
            "leeway = 1\n[[jwt.issuer]]\npublic_key_file = \"/a.pem\"\n",
            ":2: [[jwt.issuer]]: a [[jwt.issuer]] table needs `issuer`",
        ),
        (
            "[[jwt.issuer]]\nissuer = \"https://a\"\n",
            ":1: [[jwt.issuer]]: issuer \"https://a\" has no key",
        ),
        (
            "[[jwt.issuer]]\nissuer = \"https://a?x=1\"\njwks_file = \"/a.json\"\n",
            ":2: [[jwt.issuer]]: `issuer` must be non-empty and hold no `=`",
        ),
        (
            "[jwt]\naudience = \"x\"\n",
            ":2: [[jwt.issuer]]: unknown key `jwt.audience`",
        ),
    ] {
        let config = file(text);
        let run = revocd(&["agent", "--config", path(&config), "--print-config"], &[]);
        assert_eq!(run.code, Some(64), "{text}: {}", run.stderr);
        assert!(
            run.stderr
                .starts_with(&format!("error: {}{message}", path(&config))),
            "{text}: {}",
            run.stderr
        );
    }
}

/// Unbound keys beside two issuers: each would verify both issuers'
/// tokens, so `serve` and `agent` refuse to start, saying how to bind.
#[test]
fn unbound_keys_beside_two_issuers_exit_64() {
    let pem = key_fixture("ec256_public.pem");
    let listen = ["--listen", "127.0.0.1:0", "--dev"];
    let flags = [
        "--jwt-issuer",
        "https://a.example",
        "--jwt-issuer",
        "https://b.example",
        "--jwt-public-key-file",
        &pem,
    ];
    let serve: Vec<&str> = ["serve"]
        .iter()
        .chain(&listen)
        .chain(&flags)
        .copied()
        .collect();
    let agent = [&["agent", "--http-listen", "127.0.0.1:0"][..], &flags].concat();
    // The same through the environment, and through the file: a table
    // binding B's key makes B an issuer beside the unbound key's A.
    let env = [
        ("REVOCD_JWT_ISSUER", "https://a.example,https://b.example"),
        ("REVOCD_JWKS_FILE", &*key_fixture("jwks.json")),
    ];
    let tables = file(&format!(
        "jwt_issuer = [\"https://a.example\"]\njwt_public_key_file = [{pem:?}]\n\
         [[jwt.issuer]]\nissuer = \"https://b.example\"\npublic_key_file = {pem:?}\n"
    ));
    let from_file = [
        "serve",
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--config",
        path(&tables),
    ];
    for (args, env) in [
        (&serve[..], &[][..]),
        (&agent[..], &[][..]),
        (&["agent", "--http-listen", "127.0.0.1:0"][..], &env[..]),
        (&from_file[..], &[][..]),
    ] {
        let run = revocd(args, env);
        assert_eq!(run.code, Some(64), "{args:?}: {}", run.stderr);
        for part in [
            "bound to no issuer",
            "2 issuers are accepted (https://a.example, https://b.example)",
            "--jwt-issuer-key ISSUER=PATH",
        ] {
            assert!(run.stderr.contains(part), "{args:?}: {}", run.stderr);
        }
    }
}
