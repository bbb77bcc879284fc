//! revocd: a distributed revocation service for JWT access tokens.
//!
//! Auth servers call `Revoke` or `RevokeSubject`; every revocation is stored
//! in Redis (or the embedded memory store) for exactly as long as the token it
//! kills, and appended to an ordered change log in the same atomic step.
//! `Check` answers authoritatively from the store.
//!
//! # Layout
//!
//! Three layers; each uses only the ones above it.
//!
//! Always built: the wire types and the formats every part shares.
//!
//! - [`pb`]: the generated gRPC types of `proto/revocation/v1/revocation.proto`
//!   (their server half only with feature `server`).
//! - [`filter`]: the bloom filter of keyed digests that gateways check.
//! - [`snapshot`]: a snapshot cut into `Snapshot` parts and put back together.
//! - [`cursor`]: change-log cursors, their forms and their order.
//! - [`backoff`]: capped, jittered exponential backoff for reconnects.
//! - [`file`]: errors of files named by flags (keys, certificates, API keys).
//! - [`redact`]: secrets hidden before they are printed or logged.
//! - [`time`]: unix time, and the [`time::Clock`] tests control.
//!
//! The gateway library (feature `gateway`):
//!
//! - [`tokens`]: JWT verification (keys, JWKS, issuers, audiences, leeway).
//! - [`bounds`]: what a gateway may accept: tokens the server can keep revoked.
//! - [`gateway`]: the in-process checker for gateways, its stream follower and tower layer.
//!
//! The server side (feature `server`; the binaries need it):
//!
//! - [`hub`]: each replica's filter, fed by the change log, streamed to gateways.
//! - [`auth`]: API keys, roles and the caller of an RPC.
//! - [`store`]: the storage backends, Redis and memory, behind one enum.
//! - [`server`]: the gRPC service (handlers, error mapping, request limits) and [`server::run`].
//! - [`agent`]: `revocd agent`, the sidecar for nginx, Traefik, Caddy and Envoy.
//! - [`config`]: `revocd serve` and `revocd agent` flags and environment
//!   variables, and the start-up that builds a replica's [`server::State`]
//!   and the [`agent::Agent`] from them. The top of the library: only the
//!   binaries read it; no other module imports it.
//! - [`oauth`]: callers of the HTTP doors and the RFC 7662 answer, shared by the server and the agent.
//! - [`settings`]: `--config` TOML files under the flags and environment, and `--print-config`.
//! - [`shutdown`]: SIGINT / SIGTERM.
//! - [`telemetry`]: the Prometheus recorder shared by the server and the agent, and the text log's field formatter.
//! - [`tls`]: TLS and mutual TLS of the gRPC server and its clients.

pub mod backoff;
pub mod cursor;
pub mod file;
pub mod filter;
pub mod redact;
pub mod snapshot;
pub mod time;

#[cfg(feature = "gateway")]
pub mod bounds;
#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "gateway")]
pub mod tokens;

#[cfg(feature = "server")]
pub mod agent;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod hub;
#[cfg(feature = "server")]
pub mod oauth;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod settings;
#[cfg(feature = "server")]
pub mod shutdown;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod tls;

/// Generated protobuf and gRPC types for package `revocation.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("revocation.v1");

    /// Encoded `FileDescriptorSet` of the API, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/revocation_descriptor.bin"));

    impl Delta {
        /// Every token digest the delta adds, as sent: those of `digests`
        /// (protocol 2) and those of every slice (protocol 3), 16 bytes
        /// each unless the frame is malformed.
        pub fn added_digests(&self) -> impl Iterator<Item = &[u8]> {
            let sliced = self
                .slices
                .iter()
                .flat_map(|slice| slice.digests.chunks(crate::filter::DIGEST_BYTES));
            self.digests.iter().map(|digest| &digest[..]).chain(sliced)
        }
    }
}

/// The crate version, reported by `GetStats`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
