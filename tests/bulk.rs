//! `revoctl import`, `export`, `list` and `audit` as an operator runs them:
//! the real `revoctl` binary against a real `revocd serve` process on its
//! own `redis-server`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use revocd::pb::{ListRevocationsRequest, RecordFilter, RevokeBatchRequest, RevokeRequest};
use revocd::time::{format_unix, unix_now};
use serde_json::Value;
use support::{token_for, Deployment, RedisServer, Replica, ISSUER};

/// One deployment: Redis, the API keys, and a `revocd serve` on them.
struct Setup {
    replica: Replica,
    server: String,
    dir: tempfile::TempDir,
    redis: RedisServer,
    _deployment: Deployment,
}

impl Setup {
    async fn start() -> Self {
        Self::start_with_keys(&[]).await
    }

    /// [`Setup::start`] with more API keys: (key, TOML lines after the
    /// key's name, digest and roles `revoke` and `read`).
    async fn start_with_keys(keys: &[(&str, &str)]) -> Self {
        let redis = RedisServer::start();
        let deployment = Deployment::new();
        let keys_file = deployment.path("api-keys.toml");
        let mut toml = std::fs::read_to_string(&keys_file).expect("the keys file");
        for (key, settings) in keys {
            let digest = revocd::auth::key_digest_hex(key);
            toml.push_str(&format!(
                "[[key]]\nname = \"{key}\"\nsha256 = \"{digest}\"\nroles = [\"revoke\", \"read\"]\n{settings}\n\n"
            ));
        }
        std::fs::write(&keys_file, toml).expect("writing the keys file");
        let replica = Replica::spawn(&deployment.args(&["--redis-url", &redis.url()])).await;
        Setup {
            server: replica.address.to_string(),
            replica,
            dir: tempfile::tempdir().expect("temp dir"),
            redis,
            _deployment: deployment,
        }
    }

    /// `revoctl --server <this> [--api-key key] args...`.
    fn revoctl(&self, key: Option<&str>, args: &[&str]) -> Output {
        self.command(key, args).output().expect("running revoctl")
    }

    /// The same, with `input` on stdin.
    fn revoctl_with_stdin(&self, key: Option<&str>, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(key, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting revoctl");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input.as_bytes()).expect("writing stdin");
        drop(stdin);
        child.wait_with_output().expect("running revoctl")
    }

    fn command(&self, key: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_revoctl"));
        command
            .args(["--server", &self.server])
            .args(args)
            .env_remove("REVOCD_API_KEY")
            .env_remove("REVOCD_SERVER");
        if let Some(key) = key {
            command.args(["--api-key", key]);
        }
        command
    }

    /// Writes `text` to a file in the test's directory; returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("writing a test file");
        path.to_str().expect("UTF-8 path").to_owned()
    }

    /// `import FILE` with the revoke key.
    fn import(&self, path: &str) -> Output {
        self.revoctl(Some("key-revoke"), &["import", path])
    }

    /// `list --json extra...` with the read key: one object per record.
    fn list(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["list", "--json"];
        args.extend_from_slice(extra);
        json_lines(&self.revoctl(Some("key-read"), &args))
    }

    /// `export` to stdout with the read key.
    fn export(&self) -> String {
        let output = self.revoctl(Some("key-read"), &["export"]);
        assert_success(&output);
        String::from_utf8(output.stdout).expect("UTF-8 CSV")
    }
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "revoctl failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// stdout as JSON lines, after checking the run succeeded.
fn json_lines(output: &Output) -> Vec<Value> {
    assert_success(output);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn jtis(records: &[Value]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| r["jti"].as_str().map(str::to_owned))
        .collect()
}

/// The summary `import` prints on stderr: the count line and the line
/// numbers it names as rejected, with their reasons.
struct Summary {
    counts: String,
    rejected: BTreeMap<u64, String>,
}

fn summary(output: &Output) -> Summary {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let counts = stderr
        .lines()
        .find(|l| l.starts_with("imported "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"))
        .to_owned();
    let rejected = stderr
        .lines()
        .filter_map(|l| {
            let (number, reason) = l.strip_prefix("line ")?.split_once(": ")?;
            Some((number.parse().ok()?, reason.to_owned()))
        })
        .collect();
    Summary { counts, rejected }
}

#[tokio::test]
async fn a_csv_import_takes_every_good_line_and_names_exactly_the_bad_ones() {
    let setup = Setup::start().await;
    let now = unix_now();
    let exp = now + 3_600;
    let too_long = "j".repeat(257);
    let lines = [
        "jti,expires_at,issuer,reason".to_owned(), // 1
        format!("csv-1,{exp},,plain"),             // 2
        format!(r#"csv-2,{exp},{ISSUER},"lost, stolen, ""gone""""#), // 3
        String::new(),                             // 4
        format!(r#"csv-3,{},,"a, b""#, format_unix(exp)), // 5
        "csv-4,tomorrow,,bad expiry".to_owned(),   // 6
        format!(",{exp},,empty jti"),              // 7
        format!("csv-5,{},,too far ahead", now + 400 * 86_400), // 8
        format!("{too_long},{exp},,too long"),     // 9
        format!("csv-6,{exp}"),                    // 10
        "   ".to_owned(),                          // 11
        format!(r#"csv-7,{exp},,"unterminated"#),  // 12
        format!("csv-8,{exp},https://other.test,wrong issuer"), // 13
        format!("csv-9,{},,long expired", now - 7_200), // 14
    ];
    let path = setup.file("revocations.csv", &(lines.join("\r\n") + "\r\n"));

    let output = setup.import(&path);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let summary = summary(&output);
    assert_eq!(
        summary.counts, "imported 4, already revoked 1, rejected 6",
        "an expired token needs nothing and counts as taken"
    );
    assert_eq!(
        summary.rejected.keys().copied().collect::<Vec<_>>(),
        [6, 7, 8, 9, 12, 13]
    );
    assert!(
        summary.rejected[&6].contains("\"tomorrow\""),
        "{:?}",
        summary.rejected
    );
    assert!(summary.rejected[&7].contains("`jti` is empty"));
    assert!(summary.rejected[&8].contains("longest token lifetime"));
    assert!(summary.rejected[&9].contains("257 bytes"));
    assert!(summary.rejected[&12].contains("closing quote"));
    assert!(summary.rejected[&13].contains("issuer"));

    let records = setup.list(&["--kind", "token"]);
    assert_eq!(
        jtis(&records),
        BTreeSet::from(["csv-1", "csv-2", "csv-3", "csv-6"].map(String::from))
    );
    let reason_of = |jti: &str| {
        records.iter().find(|r| r["jti"] == jti).expect("listed")["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(reason_of("csv-2"), r#"lost, stolen, "gone""#);
    assert_eq!(reason_of("csv-3"), "a, b");
    assert!(records
        .iter()
        .all(|r| r["actor"] == "auth-server" && r["issuer"] == ISSUER));
    assert!(
        records.iter().all(|r| r["expires_at"] == exp),
        "{records:?}"
    );

    let status = setup.revoctl(Some("key-read"), &["status", "csv-6", "--json"]);
    assert_success(&status);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["revoked"], true);
}

#[tokio::test]
async fn json_lines_import_and_importing_again_finds_everything_already_revoked() {
    let setup = Setup::start().await;
    let exp = unix_now() + 1_800;
    let lines: String = (0..25)
        .map(|i| {
            let expires_at = if i % 2 == 0 {
                Value::from(exp)
            } else {
                Value::from(format_unix(exp))
            };
            let line = serde_json::json!({
                "jti": format!("json-{i}"), "expires_at": expires_at,
                "issuer": if i % 3 == 0 { "" } else { ISSUER }, "reason": format!("batch {i}, \"json\""),
            });
            format!("{line}\n")
        })
        .collect();
    let path = setup.file("revocations.jsonl", &lines);

    let first = setup.import(&path);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert_eq!(
        summary(&first).counts,
        "imported 25, already revoked 0, rejected 0"
    );
    let records = setup.list(&[]);
    assert_eq!(records.len(), 25);
    assert!(records
        .iter()
        .any(|r| r["jti"] == "json-7" && r["reason"] == "batch 7, \"json\""));

    // Again, from stdin, with the summary as JSON on stdout.
    let again = setup.revoctl_with_stdin(Some("key-revoke"), &["import", "-", "--json"], &lines);
    let summary: Vec<Value> = json_lines(&again);
    assert_eq!(summary[0]["imported"], 0);
    assert_eq!(summary[0]["already_revoked"], 25);
    assert_eq!(summary[0]["rejected"], 0);
    assert_eq!(setup.list(&[]).len(), 25);
}

#[tokio::test]
async fn export_then_import_into_an_empty_deployment_gives_the_same_set() {
    let first = Setup::start().await;
    let exp = unix_now() + 3_600;
    let reasons = [
        "plain",
        "with, commas",
        "she said \"log out\"",
        " padded ",
        "ünïcødé ✓",
        "",
    ];
    let csv: String = (0..300)
        .map(|i| {
            let reason = reasons[i % reasons.len()].replace('"', "\"\"");
            format!("rt-{i},{},,\"{reason}\"\n", exp + i as i64)
        })
        .collect();
    let imported = first.import(&first.file("in.csv", &csv));
    assert_eq!(imported.status.code(), Some(0), "{imported:?}");
    // A revocation by token and a subject cut-off: the first is exported,
    // the second is not (the CSV has no place for it).
    let token = token_for("alice", "rt-token");
    assert_success(&first.revoctl(None, &["revoke", "--token", &token, "--reason", "self"]));
    assert_success(&first.revoctl(Some("key-revoke"), &["revoke-subject", "bob"]));

    let exported = first.export();
    let path = first.dir.path().join("out.csv");
    let to_file = first.revoctl(
        Some("key-read"),
        &["export", "--output", path.to_str().unwrap()],
    );
    assert_success(&to_file);
    assert!(String::from_utf8_lossy(&to_file.stderr).contains("exported 301 token revocations"));
    let leftovers: Vec<_> = std::fs::read_dir(first.dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(&std::fs::read_to_string(&path).unwrap()),
        sorted(&exported)
    );
    assert_eq!(
        exported.lines().next(),
        Some("jti,expires_at,issuer,reason")
    );
    assert_eq!(exported.lines().count(), 302);
    assert!(exported.contains("\"with, commas\""), "{exported}");

    let second = Setup::start().await;
    let reimported = second.import(path.to_str().unwrap());
    assert_eq!(reimported.status.code(), Some(0), "{reimported:?}");
    assert_eq!(
        summary(&reimported).counts,
        "imported 301, already revoked 0, rejected 0"
    );
    assert_eq!(sorted(&second.export()), sorted(&exported));
}

#[tokio::test]
async fn list_filters_by_actor_subject_kind_and_time() {
    let setup = Setup::start().await;
    let exp = (unix_now() + 600).to_string();
    let revoke = |key: &str, jti: &str| {
        let args = [
            "revoke",
            "--jti",
            jti,
            "--expires-at",
            &exp,
            "--reason",
            "test",
        ];
        assert_success(&setup.revoctl(Some(key), &args));
    };
    revoke("key-revoke", "by-auth");
    revoke("key-mixed", "by-mixed");
    let token = token_for("alice", "alice-token");
    assert_success(&setup.revoctl(None, &["revoke", "--token", &token]));
    assert_success(&setup.revoctl(
        Some("key-admin"),
        &["revoke-subject", "bob", "--reason", "gone"],
    ));

    assert_eq!(
        jtis(&setup.list(&["--actor", "mixed"])),
        BTreeSet::from(["by-mixed".to_owned()])
    );
    let alice = setup.list(&["--subject", "alice"]);
    assert_eq!(alice.len(), 1, "{alice:?}");
    assert_eq!(alice[0]["jti"], "alice-token");
    assert_eq!(alice[0]["actor"], "self");
    let cutoffs = setup.list(&["--kind", "subject"]);
    assert_eq!(cutoffs.len(), 1);
    assert_eq!(cutoffs[0]["subject"], "bob");
    assert_eq!(cutoffs[0]["actor"], "operator");
    assert_eq!(setup.list(&["--kind", "token"]).len(), 3);
    assert_eq!(setup.list(&["--limit", "2"]).len(), 2);
    assert_eq!(setup.list(&["--issuer", "https://nobody.test"]).len(), 0);

    // A second group, made in a later second than every record so far.
    let first_group = setup.list(&[]);
    let later = first_group
        .iter()
        .map(|r| r["revoked_at"].as_i64().unwrap())
        .max()
        .unwrap()
        + 1;
    while unix_now() < later {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    revoke("key-revoke", "later-1");
    revoke("key-revoke", "later-2");
    let later_rfc3339 = format_unix(later);
    assert_eq!(
        jtis(&setup.list(&["--since", &later_rfc3339])),
        BTreeSet::from(["later-1", "later-2"].map(String::from))
    );
    assert_eq!(
        setup.list(&["--until", &later.to_string()]).len(),
        first_group.len()
    );
    assert_eq!(setup.list(&["--since", "1h"]).len(), first_group.len() + 2);
    assert_eq!(setup.list(&["--until", "1h"]).len(), 0);

    let table = setup.revoctl(Some("key-read"), &["list", "--actor", "mixed"]);
    assert_success(&table);
    let table = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("KIND") && lines[0].contains("REVOKED AT"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("token") && lines[1].contains("by-mixed"),
        "{table}"
    );
    assert!(
        lines[1].contains("mixed") && lines[1].contains("127.0.0.1:"),
        "{table}"
    );

    let bad = setup.revoctl(Some("key-read"), &["list", "--since", "last week"]);
    assert_eq!(bad.status.code(), Some(2), "clap refuses the value");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("duration ago"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_returns_every_record_once_even_while_others_revoke() {
    let setup = Setup::start().await;
    let exp = unix_now() + 3_600;
    // Over 128 members, so Redis keeps the index as a hash table and its
    // ZSCAN really pages (a small one answers in one call).
    let csv: String = (0..600).map(|i| format!("page-{i},{exp}\n")).collect();
    let imported = setup.import(&setup.file("many.csv", &csv));
    assert_eq!(imported.status.code(), Some(0), "{imported:?}");
    let before: BTreeSet<String> = (0..600).map(|i| format!("page-{i}")).collect();

    let whole = setup.list(&[]);
    let paged = setup.list(&["--page-size", "7"]);
    assert_eq!(jtis(&whole), before);
    assert_eq!(paged.len(), 600, "each record once");
    assert_eq!(jtis(&paged), before);

    // The server did cut that walk into many pages.
    let mut client = setup.replica.client(Some("key-read")).await;
    let (mut pages, mut token) = (0, String::new());
    loop {
        let page = client
            .list_revocations(ListRevocationsRequest {
                filter: Some(RecordFilter::default()),
                page_size: 7,
                page_token: token,
            })
            .await
            .expect("a page")
            .into_inner();
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages > 2, "{pages} pages");

    // Now walk again while another client keeps adding revocations.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut writer = setup.replica.client(Some("key-revoke")).await;
    let (first_batch, first_written) = tokio::sync::oneshot::channel();
    let writing = tokio::spawn({
        let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
        async move {
            let mut first_batch = Some(first_batch);
            let mut n = 0u64;
            // Enough to make the index grow past two table resizes (1,024
            // and 2,048 members) while the walk runs, paced so the walk
            // is not outrun.
            while !stop.load(Ordering::Relaxed) && n < 4_000 {
                let items = (0..100)
                    .map(|_| {
                        n += 1;
                        RevokeRequest {
                            jti: format!("during-{n}"),
                            expires_at: exp,
                            ..Default::default()
                        }
                    })
                    .collect();
                writer
                    .revoke_batch(RevokeBatchRequest { items })
                    .await
                    .expect("concurrent batch");
                written.store(n, Ordering::Relaxed);
                if let Some(signal) = first_batch.take() {
                    let _ = signal.send(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    });
    first_written.await.expect("the writer is writing");
    let args = ["list", "--json", "--kind", "token", "--page-size", "20"];
    let command = setup.command(Some("key-read"), &args);
    let walked = tokio::task::spawn_blocking(move || {
        let mut command = command;
        command.output().expect("running revoctl")
    })
    .await
    .unwrap();
    let during = written.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    let walked = json_lines(&walked);
    let seen = jtis(&walked);
    let missing: Vec<_> = before.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "lost {} records: {missing:?}",
        missing.len()
    );
    assert_eq!(seen.len(), walked.len(), "no record twice");
    assert!(
        during > 250,
        "the writer kept writing during the walk ({during})"
    );
}

#[tokio::test]
async fn audit_shows_who_did_what_from_where_oldest_first() {
    let setup = Setup::start().await;
    let exp = (unix_now() + 600).to_string();
    let by_jti = [
        "revoke",
        "--jti",
        "audited",
        "--expires-at",
        &exp,
        "--reason",
        "first",
    ];
    assert_success(&setup.revoctl(Some("key-revoke"), &by_jti));
    let cutoff = [
        "revoke-subject",
        "carol",
        "--reason",
        "second, with a comma",
    ];
    assert_success(&setup.revoctl(Some("key-admin"), &cutoff));
    let token = token_for("dave", "dave-token");
    assert_success(&setup.revoctl(None, &["revoke", "--token", &token, "--reason", "third"]));
    // A repeat changes nothing and is not in the trail.
    assert_success(&setup.revoctl(Some("key-revoke"), &by_jti));

    let changes =
        json_lines(&setup.revoctl(Some("key-read"), &["audit", "--since", "1h", "--json"]));
    let field = |name: &str| -> Vec<String> {
        changes
            .iter()
            .map(|c| c[name].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(field("actor"), ["auth-server", "operator", "self"]);
    assert_eq!(field("reason"), ["first", "second, with a comma", "third"]);
    assert_eq!(field("kind"), ["token", "subject", "token"]);
    assert!(
        field("source").iter().all(|s| s.starts_with("127.0.0.1:")),
        "{changes:?}"
    );
    let logged: Vec<i64> = changes
        .iter()
        .map(|c| c["logged_at_ms"].as_i64().unwrap())
        .collect();
    assert!(
        logged.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {logged:?}"
    );

    let text = setup.revoctl(Some("key-read"), &["audit", "--since", "1h"]);
    assert_success(&text);
    let text = String::from_utf8(text.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("  auth-server  127.0.0.1:") && lines[0].contains("\"audited\""));
    assert!(lines[0].ends_with("reason: \"first\""), "{text}");
    assert!(
        lines[1].contains("operator") && lines[1].contains("\"carol\""),
        "{text}"
    );
    assert!(
        lines[2].contains("  self  ") && lines[2].contains("subject \"dave\""),
        "{text}"
    );

    let operator = json_lines(&setup.revoctl(
        Some("key-read"),
        &["audit", "--actor", "operator", "--json"],
    ));
    assert_eq!(operator.len(), 1);
    let future = (unix_now() + 3_600).to_string();
    assert!(
        json_lines(&setup.revoctl(Some("key-read"), &["audit", "--since", &future, "--json"]))
            .is_empty()
    );
}

#[tokio::test]
async fn an_import_rides_out_a_redis_outage_by_retrying_its_batches() {
    let mut setup = Setup::start().await;
    let exp = unix_now() + 600;
    let csv: String = (0..3_000).map(|i| format!("outage-{i},{exp}\n")).collect();
    let path = setup.file("outage.csv", &csv);
    setup.redis.kill();
    let import = setup
        .command(Some("key-revoke"), &["import", &path])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting revoctl");
    // The first retries meet a server whose store is down; a later one
    // finds it back (empty: this Redis keeps nothing on disk).
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    setup.redis.restart();
    let output = import.wait_with_output().expect("running revoctl");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unavailable") && stderr.contains("retrying"),
        "{stderr}"
    );
    assert_eq!(
        summary(&output).counts,
        "imported 3,000, already revoked 0, rejected 0"
    );
    assert_eq!(setup.list(&[]).len(), 3_000);
}

#[tokio::test]
async fn an_import_waits_out_a_rate_quota_and_reports_a_full_live_quota() {
    let setup = Setup::start_with_keys(&[
        ("key-throttled", "max_revocations_per_second = 400"),
        ("key-capped", "max_live_revocations = 5"),
    ])
    .await;
    let exp = unix_now() + 600;
    let csv: String = (0..1_200).map(|i| format!("rate-{i},{exp}\n")).collect();
    let path = setup.file("throttled.csv", &csv);
    let throttled = setup.revoctl(Some("key-throttled"), &["import", &path]);
    assert_eq!(throttled.status.code(), Some(0), "{throttled:?}");
    assert_eq!(
        summary(&throttled).counts,
        "imported 1,200, already revoked 0, rejected 0",
        "refusals over the rate are sent again"
    );

    // A live quota does not free up by waiting: once a whole retry
    // schedule passes without progress, the refusals stand.
    let csv: String = (0..8).map(|i| format!("cap-{i},{exp}\n")).collect();
    let capped = setup.revoctl(
        Some("key-capped"),
        &["import", &setup.file("capped.csv", &csv)],
    );
    assert_eq!(capped.status.code(), Some(2), "{capped:?}");
    let capped = summary(&capped);
    assert_eq!(capped.counts, "imported 5, already revoked 0, rejected 3");
    assert_eq!(
        capped.rejected.keys().copied().collect::<Vec<_>>(),
        [6, 7, 8]
    );
    assert!(
        capped.rejected[&6].contains("quota"),
        "{:?}",
        capped.rejected
    );
}

#[tokio::test]
async fn roles_bound_the_bulk_commands() {
    let setup = Setup::start().await;
    let path = setup.file("one.csv", &format!("r-1,{}\n", unix_now() + 600));
    let refused = setup.revoctl(Some("key-read"), &["import", &path]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("error: permission denied"), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(setup.list(&[]).len(), 0);

    let out = setup.dir.path().join("refused.csv");
    let out = out.to_str().unwrap();
    let commands: [&[&str]; 4] = [
        &["list"],
        &["audit"],
        &["export"],
        &["export", "--output", out],
    ];
    for args in commands {
        let output = setup.revoctl(Some("key-revoke"), args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("error: permission denied"),
            "{args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    let files: Vec<_> = std::fs::read_dir(setup.dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "a refused export leaves no file behind");

    let missing = setup.import("/nonexistent/file.csv");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("error: cannot open"));
}

#[tokio::test]
async fn a_json_export_carries_cutoffs_and_import_restores_every_rule() {
    let first = Setup::start().await;
    let exp = unix_now() + 3_600;
    let before = (unix_now() - 60).to_string();
    assert_success(&first.revoctl(
        Some("key-revoke"),
        &["revoke", "--jti", "jt-1", "--expires-at", &exp.to_string()],
    ));
    assert_success(&first.revoctl(
        Some("key-revoke"),
        &[
            "revoke-subject",
            "bob",
            "--not-before",
            &before,
            "--reason",
            "left",
        ],
    ));
    assert_success(&first.revoctl(
        Some("key-revoke"),
        &["revoke-claim", "sid", "laptop", "--before", &before],
    ));
    assert_success(&first.revoctl(
        Some("key-admin"),
        &["revoke-issuer", ISSUER, "--before", &before],
    ));

    let exported = first.revoctl(Some("key-read"), &["export", "--json"]);
    assert_success(&exported);
    assert!(
        String::from_utf8_lossy(&exported.stderr)
            .contains("exported 1 token revocations and 3 cut-offs"),
        "{exported:?}"
    );
    let text = String::from_utf8(exported.stdout).expect("UTF-8 JSON lines");
    let path = first.file("rules.jsonl", &text);

    // The revoke key may not restore the issuer-wide cut-off: that line,
    // and only that one, is rejected.
    let second = Setup::start().await;
    let partial = second.import(&path);
    assert_eq!(partial.status.code(), Some(2), "{partial:?}");
    let partial = summary(&partial);
    assert_eq!(partial.counts, "imported 3, already revoked 0, rejected 1");
    let reasons: Vec<&String> = partial.rejected.values().collect();
    assert!(
        reasons.len() == 1 && reasons[0].contains("permission denied"),
        "{reasons:?}"
    );
    let again = second.revoctl(Some("key-admin"), &["import", &path]);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert_eq!(
        summary(&again).counts,
        "imported 1, already revoked 3, rejected 0"
    );

    let rules = |setup: &Setup| {
        let mut rules: Vec<String> = setup
            .list(&[])
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {} {}",
                    r["kind"],
                    r["issuer"],
                    r["jti"],
                    r["subject"],
                    r["claim"],
                    r["value"],
                    r["not_before"]
                )
            })
            .collect();
        rules.sort();
        rules
    };
    let restored = rules(&second);
    assert_eq!(restored.len(), 4, "{restored:?}");
    assert_eq!(restored, rules(&first));
}
