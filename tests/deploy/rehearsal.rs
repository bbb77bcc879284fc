//! The compose stack rehearsed without Docker: Redis, the two replicas, the
//! agent and nginx (with the compose site and `deploy/nginx/`'s snippets)
//! run as local processes with the compose file's own commands, environment
//! and secrets (addresses moved to loopback), its healthchecks are run as
//! written, and a token is allowed (a forged `X-Auth-Subject` replaced),
//! revoked with the example operator key, then refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::compose::{compose, compose_invocations, compose_services, trimmed_file};
use crate::files::{deploy_dir, read, str_of, strings};
use crate::flags::{flag_value, port_of, setting, Program};
use crate::support::nginx::{http_get, loopback, HttpResponse, Nginx, NginxConfig};
use crate::support::{eventually_blocking, free_port, sign_with, Process, RedisServer};

/// `GET /orders/42` with `headers` from the service at `address`.
fn get(address: SocketAddr, headers: &[(&str, &str)]) -> HttpResponse {
    http_get(address, "/orders/42", headers).unwrap_or_else(|e| panic!("GET from {address}: {e}"))
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
        running.push(Process::spawn(&mut child, &format!("revocd ({name})")));
    }

    // The compose healthchecks, run as written (bash included).
    for (name, service) in services {
        if !own_ports.contains_key(name) {
            continue;
        }
        let test = strings(&service["healthcheck"]["test"], name);
        assert_eq!(test[0], "CMD", "service {name}: exec-form healthcheck");
        let argv: Vec<String> = test[1..].iter().map(|arg| localize(name, arg)).collect();
        eventually_blocking(
            &format!("{name}'s healthcheck"),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let status = Command::new(&argv[0])
                    .args(&argv[1..])
                    .stderr(Stdio::null())
                    .status();
                match status {
                    Ok(status) if status.success() => Ok(()),
                    other => Err(other),
                }
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
    let forward_auth = loopback(port_of(&localize(
        agent_name,
        flag_value(&agent.args, "--http-listen").expect("--http-listen"),
    )));
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
    let allowed = get(forward_auth, &[("Authorization", &bearer)]);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-auth-subject"), Some("alice"));
    assert_eq!(allowed.header("x-auth-issuer"), Some(issuer));
    let refused = get(forward_auth, &[]);
    assert_eq!(refused.status, 401);
    assert!(refused.header("www-authenticate").is_some());

    // nginx with the compose site (deploy/compose/nginx-demo.conf) and
    // deploy/nginx/'s snippets, as the compose file mounts them.
    let mounts = strings(&services["nginx"]["volumes"], "nginx volumes");
    assert!(mounts
        .iter()
        .any(|mount| mount.ends_with(":/etc/nginx/revocd-auth.conf:ro")));
    let site = localize(agent_name, &read("compose/nginx-demo.conf"));
    let nginx = Nginx::start_config(NginxConfig::with_site(".", |listen, app| {
        site.replace("server demo-upstream:80;", &format!("server {app};"))
            .replace("listen 80;", &format!("listen {listen};"))
    }));
    let forged = ("X-Auth-Subject", "mallory");
    let through = nginx.get_with("/orders/42", &[("Authorization", &bearer), forged]);
    assert_eq!(through.status, 200, "{through:?}\n{}", nginx.error_log());
    assert_eq!(
        through.header("x-seen-auth-subject"),
        Some("alice"),
        "the application sees the agent's subject, never the client's"
    );
    let refused = nginx.get_with("/orders/42", &[forged]);
    assert_eq!(refused.status, 401, "no token, no entry: {refused:?}");
    assert!(refused.header("www-authenticate").is_some());

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
    eventually_blocking(
        "the agent to refuse the revoked token",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match get(forward_auth, &[("Authorization", &bearer)]).status {
            401 => Ok(()),
            status => Err(status),
        },
    );
    let after = nginx.get_with("/orders/42", &[("Authorization", &bearer)]);
    assert_eq!(after.status, 401, "nginx refuses the revoked token");
    drop(nginx);
    drop(running);
}
