//! The compose stack rehearsed without Docker: Redis, the two replicas, the
//! agent and nginx (with the compose site and `deploy/nginx/`'s snippets)
//! run as local processes with the compose file's own commands, environment
//! and secrets (addresses moved to loopback), its healthchecks are run as
//! written, and a token is allowed (a forged `X-Auth-Subject` replaced),
//! revoked with the example operator key, then refused.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::compose::{compose, compose_invocations, compose_services, trimmed_file};
use crate::files::{deploy_dir, read, str_of, strings};
use crate::flags::{flag_value, port_of, setting, Program};
use crate::support::{free_port, sign_with, RedisServer};

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
pub fn nginx_prefix(site: &str, snippet_dir: &str, app_port: u16) -> tempfile::TempDir {
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

pub fn nginx_command(prefix: &Path) -> Command {
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
