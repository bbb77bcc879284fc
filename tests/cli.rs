//! `revoctl` and `revocd` as a person uses them: real binaries, real gRPC.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use support::{free_port, token_for, Deployment, RedisServer, Replica};

fn revoctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_revoctl"))
        .args(args)
        .env_remove("REVOCD_API_KEY")
        .env_remove("REVOCD_SERVER")
        .output()
        .expect("running revoctl")
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "revoctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object on stdout")
}

async fn replica() -> (Replica, RedisServer, Deployment) {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let replica = Replica::spawn(&deployment.args(&["--redis-url", &redis.url()])).await;
    (replica, redis, deployment)
}

#[tokio::test]
async fn revoke_then_status_by_token_and_by_jti() {
    let (replica, _redis, _deployment) = replica().await;
    let server = replica.address.to_string(); // bare host:port works
    let token = token_for("alice", "cli-1");

    let before = revoctl(&[
        "--server",
        &server,
        "--api-key",
        "key-read",
        "status",
        "--token",
        &token,
        "--json",
    ]);
    assert_eq!(
        stdout_json(&before)["revoked"],
        false,
        "a live token's status is printed too"
    );

    let revoked = revoctl(&[
        "--server", &server, "revoke", "--token", &token, "--reason", "lost", "--json",
    ]);
    assert_eq!(stdout_json(&revoked)["newly_revoked"], true);

    // --api-key after the subcommand works as well as before it.
    let after = revoctl(&[
        "--server",
        &server,
        "status",
        "cli-1",
        "--api-key",
        "key-read",
        "--json",
    ]);
    let after = stdout_json(&after);
    assert_eq!(after["revoked"], true);
    assert_eq!(after["revoked_by"], "self");
    assert_eq!(after["reason"], "lost");

    let table = revoctl(&[
        "--server",
        &server,
        "--api-key",
        "key-read",
        "status",
        "cli-1",
    ]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("revoked ") && l.ends_with("yes")),
        "{table}"
    );
}

#[tokio::test]
async fn environment_variables_configure_revoctl() {
    let (replica, _redis, _deployment) = replica().await;
    let expires_at = (revocd::time::unix_now() + 600).to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_revoctl"))
        .args([
            "revoke",
            "--jti",
            "env-1",
            "--expires-at",
            &expires_at,
            "--json",
        ])
        .env("REVOCD_SERVER", format!("http://{}", replica.address))
        .env("REVOCD_API_KEY", "key-revoke")
        .output()
        .expect("running revoctl");
    assert_eq!(stdout_json(&output)["newly_revoked"], true);
    let stats = revoctl(&[
        "--server",
        &replica.address.to_string(),
        "--api-key",
        "key-admin",
        "stats",
        "--json",
    ]);
    let stats = stdout_json(&stats);
    assert_eq!(stats["live_revocations"], 1);
    assert_eq!(stats["store"], "redis");
}

#[tokio::test]
async fn errors_are_one_line_on_stderr_with_a_failing_exit() {
    let (replica, _redis, _deployment) = replica().await;
    let server = replica.address.to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["--api-key", "nope", "stats"], "unauthenticated"),
        (&["--api-key", "key-revoke", "stats"], "permission denied"),
        (
            &[
                "--api-key",
                "key-revoke",
                "revoke",
                "--jti",
                "x",
                "--expires-at",
                "-4",
            ],
            "invalid argument",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--server", &server];
        all.extend_from_slice(args);
        let output = revoctl(&all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("error: {expected}")),
            "{args:?}: {stderr}"
        );
    }
    let unreachable = revoctl(&["--server", &format!("127.0.0.1:{}", free_port()), "stats"]);
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).starts_with("error: cannot connect"));
}

#[test]
fn serve_without_api_keys_refuses_to_start_and_says_why() {
    let output = Command::new(env!("CARGO_BIN_EXE_revocd"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("REVOCD_API_KEYS_FILE")
        .env_remove("REVOCD_DEV")
        .output()
        .expect("running revocd");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--api-keys-file") && stderr.contains("--dev"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_revocd"))
        .args(["serve", "--dev", "--listen", "0.0.0.0:0"])
        .output()
        .expect("running revocd");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}

/// The commands `revocd serve --dev` prints work when pasted.
#[test]
fn the_dev_banner_commands_work_as_printed() {
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_revocd"))
        .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "revocd=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting revocd --dev");
    let stdout = server.stdout.take().expect("piped stdout");
    let commands: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            line.trim()
                .strip_prefix("cargo run --bin revoctl -- ")
                .map(str::to_owned)
        })
        .take(5)
        .collect();
    assert_eq!(commands.len(), 5, "the banner lists five commands");
    let run = |command: &str| -> String {
        // The printed commands are shell lines; none needs more than
        // splitting on spaces, except the one quoted reason.
        let command = command.replace("'log out everywhere'", "everywhere");
        let args: Vec<&str> = command.split_whitespace().collect();
        let output = revoctl(&args);
        assert!(
            output.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let revoked_line = |table: &str| {
        table
            .lines()
            .find(|l| l.starts_with("revoked "))
            .unwrap_or("")
            .to_owned()
    };
    assert!(revoked_line(&run(&commands[0])).ends_with("no"));
    assert!(run(&commands[1]).contains("newly revoked  yes"));
    assert!(revoked_line(&run(&commands[2])).ends_with("yes"));
    assert!(run(&commands[3]).contains("not before"));
    assert!(run(&commands[4]).contains("live revocations       1"));
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test]
async fn watch_shows_the_snapshot_then_resumes_with_deltas() {
    let (replica, _redis, _deployment) = replica().await;
    let server = replica.address.to_string();
    let watch = |extra: &[&str]| {
        let mut args = vec![
            "--server",
            &server,
            "--api-key",
            "key-subscribe",
            "watch",
            "--json",
        ];
        args.extend_from_slice(extra);
        revoctl(&args)
    };
    let snapshot = stdout_json(&watch(&["--count", "1"]));
    assert_eq!(snapshot["type"], "snapshot");
    // No revocation yet: a sliced filter of no slices (format 2's header).
    assert_eq!(snapshot["bytes"], 9, "{snapshot}");

    let expires_at = (revocd::time::unix_now() + 600).to_string();
    let revoke = [
        "--server",
        &server,
        "--api-key",
        "key-revoke",
        "revoke",
        "--jti",
        "w1",
        "--expires-at",
        &expires_at,
    ];
    assert!(revoctl(&revoke).status.success());
    let generation = snapshot["generation"].to_string();
    let cursor = snapshot["cursor"].as_str().unwrap().to_owned();
    let delta = stdout_json(&watch(&[
        "--count",
        "1",
        "--cursor",
        &cursor,
        "--generation",
        &generation,
    ]));
    assert_eq!(delta["type"], "delta", "{delta}");
    assert_eq!(delta["digests"], 1);
    assert_eq!((&delta["slices"], &delta["opened"]), (&1.into(), &1.into()));

    // A new watcher's snapshot is followed by its one slice (once the
    // server's snapshot of a second ago, reused with a catch-up delta, is
    // replaced).
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    let output = watch(&["--count", "1"]);
    assert!(output.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON lines"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["type"], "slice");
    assert_eq!(lines[1]["filters"], 1);
    let ends_at = lines[1]["ends_at"].as_i64().unwrap();
    assert!(
        ends_at > revocd::time::unix_now() + 600,
        "kept past exp: {ends_at}"
    );
}
