//! `deploy/k8s/`: the server's probes, Service and disruption budget, the
//! agent sidecar, the Secrets and where they are mounted, and the sidecar's
//! nginx site (`nginx -t`).

use std::collections::BTreeMap;
use std::process::Command;

use revocd::auth::Access;
use serde_json::Value as Json;

use crate::files::{
    deploy_dir, files_under, is_yaml, read, relative, str_of, strings, value_string, yaml_docs,
};
use crate::flags::{flag_value, port_of, setting, Invocation, Program};
use crate::support::nginx::NginxConfig;

/// Every document of every Kubernetes manifest.
pub fn k8s_objects() -> Vec<(String, Json)> {
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

pub fn containers(deployment: &Json) -> &Vec<Json> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("a Deployment's containers")
}

/// The Kubernetes containers that run the revocd image, with the
/// variables of the ConfigMaps they load.
pub fn k8s_invocations(objects: &[(String, Json)]) -> Vec<Invocation> {
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
            found.push(Invocation::new(origin, &args, env));
        }
    }
    found
}

fn labels_match(selector: &Json, labels: &Json, what: &str) {
    let selector = selector.as_object().expect("a selector");
    assert!(!selector.is_empty(), "{what}: empty selector");
    for (key, value) in selector {
        assert_eq!(&labels[key], value, "{what}: selector {key} does not match");
    }
}

/// The volume of `pod` that `container` mounts at `dir`.
fn mounted_volume<'a>(pod: &'a Json, container: &Json, dir: &str) -> &'a Json {
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|mount| mount["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {dir}"));
    pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|volume| volume["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]))
}

/// The Secret key mounted at `path` in `pod` (via a volume with `items`
/// or a whole-Secret volume), checked to exist in the Secret.
fn k8s_secret_file(objects: &[(String, Json)], pod: &Json, container: &Json, path: &str) {
    let (dir, file) = path.rsplit_once('/').expect("an absolute path");
    let volume = mounted_volume(pod, container, dir);
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
        let volume = mounted_volume(pod, nginx_container, &directory);
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

/// The Kubernetes sidecar's nginx site, with deploy/nginx/'s snippets where
/// the pod mounts them, passes `nginx -t`.
#[test]
fn k8s_sidecar_nginx_site_passes_nginx_t() {
    let objects = k8s_objects();
    let nginx = k8s_object(&objects, "ConfigMap", "demo-app-nginx");
    let site = str_of(&nginx["data"]["default.conf"], "default.conf");
    // The pod mounts the snippets at /etc/nginx/revocd; includes resolve
    // in the directory of nginx.conf (here, the prefix).
    // The site is checked as written: the free addresses go unused.
    let output = NginxConfig::with_site("revocd", |_, _| site.to_owned()).test();
    assert!(
        output.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
