//! The handlers of `revocation.v1.RevocationService`, one file an area:
//!
//! - `revoke.rs`: `Revoke`, and the checks of one item;
//! - `batch.rs`: `RevokeBatch`, items checked as `Revoke` checks them;
//! - `cutoff.rs`: `RevokeSubject`, `RevokeClaim` and their cut-off time;
//! - `check.rs`: `Check`, by jti or by token;
//! - `listing.rs`: `ListRevocations` and `ListChanges`;
//! - `subscribe.rs`: `Subscribe` (the filter stream) and `GetStats`.
//!
//! Each handler authenticates its caller, checks the request and answers
//! with an [`ApiError`] on refusal; `service.rs` maps that to a status.
//! What they share lives here: who the caller is, which issuer a request
//! means, and the quotas taken before a write.

mod batch;
mod check;
mod cutoff;
mod listing;
mod revoke;
mod subscribe;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use metrics::Counter;
use tonic::Request;
use tracing::debug;

use super::error::ApiError;
use super::limits::{self, StreamCounter};
use super::quota::{KeylessQuota, RevocationRate};
use super::State;
use crate::auth::Caller;
use crate::store::{Revocation, RevokeOutcome};

pub(crate) use self::cutoff::CutoffRequest;
pub use self::subscribe::FilterStream;

/// The HTTP door a call came through (`oauth2`), carried in the call's
/// extensions: the audit trail records it before the caller's address.
#[derive(Debug, Clone)]
pub(crate) struct Door(pub String);

/// The revocation gRPC API over a shared [`State`]: the handlers, and the
/// per-replica bookkeeping they need (open streams, rate quotas).
#[derive(Debug, Clone)]
pub struct RevocationApi {
    state: Arc<State>,
    /// Open filter streams per caller, against `max_streams`.
    streams: Arc<StreamCounter>,
    /// Rate quotas of API keys.
    rate: Arc<RevocationRate>,
    /// Quotas of self-revocation without a key.
    keyless: Arc<KeylessQuota>,
}

impl RevocationApi {
    /// An API serving from `state`.
    pub fn new(state: Arc<State>) -> Self {
        let keyless = KeylessQuota::new(state.policy.keyless, Instant::now());
        Self {
            state,
            streams: Arc::default(),
            rate: Arc::default(),
            keyless: Arc::new(keyless),
        }
    }

    /// What the API serves from.
    pub(crate) fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// The caller identified by the request's `authorization` metadata, or
    /// else by its client certificate; recorded on the RPC's span.
    fn caller<T>(&self, request: &Request<T>) -> Result<Option<Caller>, ApiError> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let client_cert_cn = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|cert| crate::tls::common_name(cert)));
        let caller = self
            .state
            .access
            .caller(authorization, client_cert_cn.as_deref())?;
        if let Some(caller) = &caller {
            tracing::Span::current().record("caller", caller.name.as_str());
        }
        Ok(caller)
    }

    /// The issuer a request means: its own, or the default. Must be one of
    /// the configured issuers when any are configured.
    fn issuer(&self, requested: &str) -> Result<String, ApiError> {
        let issuer = if requested.is_empty() {
            self.state.policy.default_issuer.as_str()
        } else {
            requested
        };
        limits::issuer(issuer)?;
        let accepted = self.state.verifier.issuers();
        if !accepted.is_empty() && !accepted.iter().any(|a| a == issuer) {
            return Err(ApiError::invalid(format!(
                "issuer {issuer:?} is not one this server accepts (--jwt-issuer, or bound to a key)"
            )));
        }
        Ok(issuer.to_owned())
    }

    /// Takes one revocation from the caller's rate quota.
    fn take_rate(&self, caller: &Caller) -> Result<(), ApiError> {
        match self.rate.take(caller, 1, Instant::now()) {
            0 => Err(over_rate_quota(caller)),
            _ => Ok(()),
        }
    }

    /// Takes one keyless self-revocation of `revocation`'s subject from
    /// `source`; a refusal is counted in
    /// `revocd_keyless_refusals_total{limit}`.
    fn take_keyless(
        &self,
        revocation: &Revocation,
        source: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let taken = self.keyless.take(
            &revocation.issuer,
            &revocation.subject,
            source,
            Instant::now(),
        );
        taken.map_err(|refusal| {
            metrics::counter!("revocd_keyless_refusals_total", "limit" => refusal.label())
                .increment(1);
            debug!(limit = refusal.label(), "keyless revocation refused");
            ApiError::from(refusal)
        })
    }
}

/// The refusal of a key over its `max_revocations_per_second`.
fn over_rate_quota(caller: &Caller) -> ApiError {
    ApiError::ResourceExhausted(format!(
        "API key {:?} is over its quota of {} revocations per second; retry later",
        caller.name,
        caller.limits.max_revocations_per_second.unwrap_or_default()
    ))
}

/// The refusal of a key holding its `max_live_revocations`.
fn over_live_quota(actor: &str, quota: Option<u64>) -> ApiError {
    ApiError::ResourceExhausted(format!(
        "API key {actor:?} already holds its quota of {} live revocations; more are accepted as its revocations expire",
        quota.unwrap_or_default()
    ))
}

/// The caller's address as `ip:port`, empty when the transport has none;
/// after the [`Door`]'s name for a call that came over HTTP
/// (`oauth2 127.0.0.1:50000`).
fn source_address<T>(request: &Request<T>) -> String {
    let address = request.remote_addr().map(address_text).unwrap_or_default();
    match request.extensions().get::<Door>() {
        Some(Door(door)) => format!("{door} {address}").trim_end().to_owned(),
        None => address,
    }
}

/// `address` as `to_string` writes it, an IPv4 one without `fmt`: every
/// revocation records its caller's address, and `to_string` was 2% of a
/// `Revoke`'s instructions.
fn address_text(address: SocketAddr) -> String {
    let SocketAddr::V4(v4) = address else {
        return address.to_string();
    };
    let mut text = String::with_capacity("255.255.255.255:65535".len());
    let mut decimal = itoa::Buffer::new();
    for (n, octet) in v4.ip().octets().into_iter().enumerate() {
        if n > 0 {
            text.push('.');
        }
        text.push_str(decimal.format(octet));
    }
    text.push(':');
    text.push_str(decimal.format(v4.port()));
    text
}

/// Counts stored revocations in `revocd_revocations_total{result}`:
/// `outcomes` is a call's or a whole batch's. Each counter is resolved on
/// first use and kept, as the per-RPC metrics are (`service.rs`).
fn count_revocations<'a>(outcomes: impl IntoIterator<Item = &'a RevokeOutcome>) {
    static NEW: OnceLock<Counter> = OnceLock::new();
    static REPEAT: OnceLock<Counter> = OnceLock::new();
    let (mut new, mut repeats) = (0, 0);
    for outcome in outcomes {
        if outcome.newly_revoked {
            new += 1;
        } else {
            repeats += 1;
        }
    }
    for (counter, result, count) in [(&NEW, "new", new), (&REPEAT, "repeat", repeats)] {
        if count > 0 {
            counter
                .get_or_init(|| metrics::counter!("revocd_revocations_total", "result" => result))
                .increment(count);
        }
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_reads_as_to_string_writes_it() {
        for address in [
            "127.0.0.1:50000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.3.4:443",
            "[::1]:8080",
            "[2001:db8::7]:1",
        ] {
            let address: SocketAddr = address.parse().unwrap();
            assert_eq!(address_text(address), address.to_string());
        }
    }
}
