//! `deploy/envoy/envoy.yaml`, decoded as an Envoy `Bootstrap` message from
//! Envoy's own protos (those `envoy-types` ships), so a misspelt field or
//! type URL fails as it would in Envoy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;

use serde_json::Value as Json;

use crate::files::{read, str_of, yaml};
use crate::flags::{prose_command_lines, Program};

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
