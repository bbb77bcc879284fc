//! The deployment examples in `deploy/`, checked against the code.
//!
//! Docker, Kubernetes, Envoy and Traefik are not on this machine, so the
//! examples are checked the ways that do not need them, one module a part
//! of `deploy/`:
//!
//! - [`files`]: every YAML file parses (each document of a multi-document
//!   file), and the README names every file;
//! - [`flags`]: every `revocd`/`revoctl` flag and `REVOCD_*` variable they
//!   use is one the real binaries print in their `--help`;
//! - [`dockerfile`], [`compose`], [`k8s`], [`traefik`]: the pieces refer to
//!   each other correctly: ports, service names, Secret keys and mount
//!   paths, the compose example keys and the API-keys files (parsed by
//!   `Access::from_toml`); the Kubernetes sidecar's nginx site passes
//!   `nginx -t`;
//! - [`envoy`]: `deploy/envoy/envoy.yaml` decodes as an Envoy `Bootstrap`;
//! - [`settings`]: `deploy/revocd.toml` loads for `revocd serve` and
//!   `revocd agent`;
//! - [`monitoring`]: the Grafana dashboard and the Prometheus alert rules
//!   query only metrics and labels the code records;
//! - [`rehearsal`]: the compose stack runs as local processes, and a token
//!   is allowed, revoked, then refused through it.

#[path = "../support/mod.rs"]
mod support;

mod compose;
mod dockerfile;
mod envoy;
mod files;
mod flags;
mod k8s;
mod monitoring;
mod rehearsal;
mod settings;
mod traefik;
