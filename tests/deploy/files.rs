//! Reading `deploy/`: its files, its YAML as JSON values (merge keys
//! applied); every YAML file parses and the README names every file.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The text of `deploy/<relative>`.
pub fn read(relative: &str) -> String {
    let path = deploy_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every file under `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
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
pub fn relative(path: &Path) -> String {
    path.strip_prefix(deploy_dir())
        .expect("a file under deploy/")
        .to_string_lossy()
        .replace('\\', "/")
}

pub fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yml" | "yaml")
    )
}

/// The documents of a YAML file as JSON values, merge keys (`<<`) applied;
/// empty documents are skipped.
pub fn yaml_docs(relative: &str) -> Vec<Json> {
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

pub fn yaml(relative: &str) -> Json {
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

pub fn str_of<'a>(value: &'a Json, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: a string expected, found {value}"))
}

pub fn strings(value: &Json, what: &str) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what}: a list expected, found {value}"))
        .iter()
        .map(|item| str_of(item, what).to_owned())
        .collect()
}

pub fn value_string(value: &Json) -> String {
    match value {
        Json::String(text) => text.clone(),
        other => other.to_string(),
    }
}

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
