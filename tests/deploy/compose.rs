//! `deploy/docker-compose.yml`: Redis, two replicas, an agent and nginx,
//! their secrets and the example keys.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use revocd::auth::{Access, Role};
use serde_json::Value as Json;

use crate::files::{deploy_dir, read, str_of, strings, value_string, yaml};
use crate::flags::{flag_value, port_of, setting, Invocation, Program};

pub fn compose() -> Json {
    yaml("docker-compose.yml")
}

pub fn compose_services(compose: &Json) -> &serde_json::Map<String, Json> {
    compose["services"]
        .as_object()
        .expect("docker-compose.yml: services")
}

/// The compose services that run the revocd image.
pub fn compose_invocations(compose: &Json) -> Vec<Invocation> {
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
        found.push(Invocation::new(origin, &command, env));
    }
    found
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

pub fn trimmed_file(path: &Path) -> String {
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
