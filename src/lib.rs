//! revocd: a distributed revocation service for JWT access tokens.
//!
//! Auth servers call `Revoke` or `RevokeSubject`; every revocation is stored
//! in Redis (or the embedded memory store) for exactly as long as the token it
//! kills, and appended to an ordered change log in the same atomic step.
//! `Check` answers authoritatively from the store.
//!
//! # Layout
//!
//! - [`pb`]: the generated gRPC types of `proto/revocation/v1/revocation.proto`.
//! - [`tokens`]: JWT verification (keys, JWKS, issuers, audiences, leeway).
//! - [`filter`]: the bloom filter of keyed digests that gateways check.
//! - [`bounds`]: what a gateway may accept: tokens the server can keep revoked.
//! - [`gateway`]: the in-process checker for gateways, its stream follower and tower layer.
//! - [`backoff`]: capped, jittered exponential backoff for reconnects.
//! - [`hub`]: each replica's filter, fed by the change log, streamed to gateways.
//! - [`auth`]: API keys, roles and the caller of an RPC.
//! - [`store`]: the storage backends, Redis and memory, behind one enum.
//! - [`server`]: the gRPC service, its error mapping and [`server::run`].
//! - [`agent`]: `revocd agent`, the sidecar for nginx, Traefik, Caddy and Envoy.
//! - [`config`]: `revocd serve` flags and environment variables.
//! - [`settings`]: `--config` TOML files under the flags and environment, and `--print-config`.
//! - [`shutdown`]: SIGINT / SIGTERM.
//! - [`telemetry`]: the Prometheus recorder shared by the server and the agent.
//! - [`time`]: unix-time helpers shared by the parts above.
//! - [`tls`]: TLS and mutual TLS of the gRPC server and its clients.

pub mod agent;
pub mod auth;
pub mod backoff;
pub mod bounds;
pub mod config;
pub mod filter;
pub mod gateway;
pub mod hub;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod tokens;

/// Generated protobuf and gRPC types for package `revocation.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("revocation.v1");

    /// Encoded `FileDescriptorSet` of the API, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/revocation_descriptor.bin"));
}

/// The crate version, reported by `GetStats`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
