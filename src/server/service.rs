//! `revocation.v1.RevocationService`: authentication, validation, and the
//! one mapping of errors to gRPC status codes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::{debug, error, warn, Instrument};

use super::quota::{KeylessQuota, KeylessRefusal, RevocationRate};
use super::{request, State};
use crate::auth::{Access, AuthError, Caller, Role};
use crate::hub::{SubscribeError, SubscribeParams};
use crate::pb::{
    self, CheckRequest, CheckResponse, GetStatsRequest, RevokeRequest, RevokeResponse,
    RevokeSubjectRequest, RevokeSubjectResponse, Stats,
};
use crate::store::{
    self, Provenance, Record, RecordFilter, RecordKind, Revocation, SubjectCutoff, TokenStatus,
};
use crate::time::unix_now;
use crate::tokens::TokenError;

/// The author recorded for a token that revoked itself.
const SELF_AUTHOR: &str = "self";

/// Why a call failed, before it becomes a [`Status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says how.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller (or its token) is not authenticated.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not make this call.
    #[error("{0}")]
    PermissionDenied(String),
    /// The server is not set up for this call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not now; retry later or elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// A limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl ApiError {
    /// An [`ApiError::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidArgument(message.into())
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::NoKeys => ApiError::FailedPrecondition(error.to_string()),
            _ if error.is_malformed() => ApiError::InvalidArgument(error.to_string()),
            _ => ApiError::Unauthenticated(error.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Forbidden { .. } => ApiError::PermissionDenied(error.to_string()),
            _ => ApiError::Unauthenticated(error.to_string()),
        }
    }
}

impl From<KeylessRefusal> for ApiError {
    fn from(refusal: KeylessRefusal) -> Self {
        ApiError::ResourceExhausted(refusal.to_string())
    }
}

impl From<SubscribeError> for ApiError {
    fn from(error: SubscribeError) -> Self {
        match error {
            SubscribeError::Full => ApiError::ResourceExhausted(error.to_string()),
            SubscribeError::NotReady | SubscribeError::Closed | SubscribeError::Lagging => {
                ApiError::Unavailable(error.to_string())
            }
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(message) => Status::invalid_argument(message),
            ApiError::Unauthenticated(message) => Status::unauthenticated(message),
            ApiError::PermissionDenied(message) => Status::permission_denied(message),
            ApiError::FailedPrecondition(message) => Status::failed_precondition(message),
            ApiError::Unavailable(message) => Status::unavailable(message),
            ApiError::ResourceExhausted(message) => Status::resource_exhausted(message),
            ApiError::Store(store::Error::BadPageToken) => {
                Status::invalid_argument(store::Error::BadPageToken.to_string())
            }
            ApiError::Store(store::Error::NotDurable(detail)) => {
                metrics::counter!("revocd_store_errors_total", "kind" => "not_durable")
                    .increment(1);
                warn!(detail, "write not confirmed durable");
                Status::unavailable(format!(
                    "the write was not confirmed durable ({detail}); retry (revocations are idempotent)"
                ))
            }
            ApiError::Store(store::Error::Unavailable(cause)) => {
                metrics::counter!("revocd_store_errors_total", "kind" => "unavailable")
                    .increment(1);
                warn!(error = %cause, "store unavailable");
                Status::unavailable(
                    "the revocation store is unavailable; retry (revocations are idempotent)",
                )
            }
            ApiError::Store(cause) => {
                metrics::counter!("revocd_store_errors_total", "kind" => "internal").increment(1);
                // Log the cause once here; the caller learns nothing internal.
                error!(error = %cause, "store error");
                Status::internal("internal error")
            }
        }
    }
}

/// The revocation gRPC service over a shared [`State`].
#[derive(Debug, Clone)]
pub struct RevocationService {
    state: Arc<State>,
    streams: Arc<StreamCounter>,
    /// Rate quotas of API keys.
    rate: Arc<RevocationRate>,
    /// Quotas of self-revocation without a key.
    keyless: Arc<KeylessQuota>,
}

/// Open filter streams per caller, so one key cannot take them all.
#[derive(Debug, Default)]
struct StreamCounter(std::sync::Mutex<HashMap<String, usize>>);

/// One open stream of a caller; the count drops with it.
#[derive(Debug)]
struct StreamPermit {
    counter: Arc<StreamCounter>,
    caller: String,
}

impl StreamCounter {
    fn acquire(self: &Arc<Self>, caller: &str, limit: usize) -> Option<StreamPermit> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(caller.to_owned()).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(StreamPermit {
            counter: Arc::clone(self),
            caller: caller.to_owned(),
        })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut counts = self.counter.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

/// A filter stream holding its caller's permit until it ends.
pub struct FilterStream {
    updates: crate::hub::Updates,
    _permit: StreamPermit,
}

impl tokio_stream::Stream for FilterStream {
    type Item = Result<pb::FilterUpdate, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.updates).poll_next(cx)
    }
}

impl RevocationService {
    /// A service serving from `state`.
    pub fn new(state: Arc<State>) -> Self {
        let keyless = KeylessQuota::new(state.policy.keyless, Instant::now());
        Self {
            state,
            streams: Arc::default(),
            rate: Arc::default(),
            keyless: Arc::new(keyless),
        }
    }

    /// The caller identified by the request's `authorization` metadata.
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
        request::issuer(issuer)?;
        let accepted = self.state.verifier.issuers();
        if !accepted.is_empty() && !accepted.iter().any(|a| a == issuer) {
            return Err(ApiError::invalid(format!(
                "issuer {issuer:?} is not one this server accepts (--jwt-issuer, or bound to a key)"
            )));
        }
        Ok(issuer.to_owned())
    }

    async fn revoke(&self, request: Request<RevokeRequest>) -> Result<RevokeResponse, ApiError> {
        let caller = self.caller(&request)?;
        let source = source_address(&request);
        let source_ip = request.remote_addr().map(|address| address.ip());
        let now = unix_now();
        let revocation =
            match self.prepare_revocation(caller.as_ref(), request.into_inner(), &source, now)? {
                Prepared::Store(revocation) => revocation,
                Prepared::Expired(response) => return Ok(response),
            };
        let live_quota = match &caller {
            Some(caller) => {
                self.take_rate(caller)?;
                caller.limits.max_live_revocations
            }
            None => {
                self.take_keyless(&revocation, source_ip)?;
                None
            }
        };
        let outcome = self
            .state
            .store
            .revoke_batch(std::slice::from_ref(&revocation), now, live_quota)
            .await?
            .pop()
            .unwrap_or_default();
        if outcome.over_quota {
            return Err(over_live_quota(&revocation.provenance.by, live_quota));
        }
        count_revocation(&outcome);
        debug!(
            jti = revocation.jti,
            by = revocation.provenance.by,
            newly = outcome.newly_revoked,
            "revoked"
        );
        Ok(revoke_response(&revocation, outcome))
    }

    /// Checks one `Revoke` request and builds the record it stores.
    fn prepare_revocation(
        &self,
        caller: Option<&Caller>,
        request: RevokeRequest,
        source: &str,
        now: i64,
    ) -> Result<Prepared, ApiError> {
        request::reason(&request.reason)?;
        let (issuer, jti, subject, expires_at, by) = if request.token.is_empty() {
            let caller = Access::require(caller, &[Role::Revoke])?;
            if request.jti.is_empty() {
                return Err(ApiError::invalid("set `token`, or `jti` with `expires_at`"));
            }
            request::identifier("jti", &request.jti)?;
            if request.expires_at == 0 {
                return Err(ApiError::invalid("`expires_at` is required with `jti`"));
            }
            let issuer = self.issuer(&request.issuer)?;
            let by = caller.name.clone();
            (issuer, request.jti, String::new(), request.expires_at, by)
        } else {
            if !request.jti.is_empty() || request.expires_at != 0 || !request.issuer.is_empty() {
                return Err(ApiError::invalid(
                    "set either `token` or `jti`/`expires_at`/`issuer`, not both",
                ));
            }
            let claims = self.state.verifier.verify(&request.token)?;
            let jti = claims.jti.ok_or_else(|| {
                ApiError::invalid(
                    "the token has no `jti` claim, so it cannot be revoked alone; revoke its subject with RevokeSubject",
                )
            })?;
            request::identifier("jti", &jti)?;
            let by = caller.map_or_else(|| SELF_AUTHOR.to_owned(), |c| c.name.clone());
            // `verify` guarantees `exp` is present.
            (
                claims.issuer,
                jti,
                claims.subject.unwrap_or_default(),
                claims.expires_at.unwrap_or_default(),
                by,
            )
        };
        self.check_expiry(expires_at, now)?;
        let keep_until = expires_at + self.state.policy.leeway;
        if keep_until <= now {
            debug!(jti, "token already expired; nothing to revoke");
            return Ok(Prepared::Expired(RevokeResponse {
                newly_revoked: false,
                expires_at,
                cursor: String::new(),
            }));
        }
        Ok(Prepared::Store(Revocation {
            issuer,
            jti,
            subject,
            expires_at,
            keep_until,
            provenance: Provenance {
                at: now,
                by,
                reason: request.reason,
                source: source.to_owned(),
            },
        }))
    }

    async fn revoke_batch(
        &self,
        request: Request<pb::RevokeBatchRequest>,
    ) -> Result<pb::RevokeBatchResponse, ApiError> {
        let caller = self.caller(&request)?;
        let caller = Access::require(caller.as_ref(), &[Role::Revoke])?.clone();
        let source = source_address(&request);
        let items = request.into_inner().items;
        if items.len() > MAX_BATCH_ITEMS {
            return Err(ApiError::invalid(format!(
                "the batch has {} items; the limit is {MAX_BATCH_ITEMS}",
                items.len()
            )));
        }
        let now = unix_now();
        let mut results = vec![pb::RevokeBatchResult::default(); items.len()];
        let mut revocations = Vec::with_capacity(items.len());
        let mut positions = Vec::with_capacity(items.len());
        for (position, item) in items.into_iter().enumerate() {
            match self.prepare_revocation(Some(&caller), item, &source, now) {
                Ok(Prepared::Store(revocation)) => {
                    revocations.push(revocation);
                    positions.push(position);
                }
                Ok(Prepared::Expired(response)) => results[position].response = Some(response),
                Err(error) => {
                    let status = Status::from(error);
                    results[position].code = status.code() as i32;
                    results[position].error = status.message().to_owned();
                }
            }
        }
        let granted = self.rate.take(&caller, revocations.len(), Instant::now());
        for &position in &positions[granted..] {
            let status = Status::from(over_rate_quota(&caller));
            results[position].code = status.code() as i32;
            results[position].error = status.message().to_owned();
        }
        revocations.truncate(granted);
        let live_quota = caller.limits.max_live_revocations;
        let outcomes = self
            .state
            .store
            .revoke_batch(&revocations, now, live_quota)
            .await?;
        for ((revocation, outcome), position) in revocations.iter().zip(outcomes).zip(positions) {
            if outcome.over_quota {
                let status = Status::from(over_live_quota(&caller.name, live_quota));
                results[position].code = status.code() as i32;
                results[position].error = status.message().to_owned();
                continue;
            }
            count_revocation(&outcome);
            results[position].response = Some(revoke_response(revocation, outcome));
        }
        debug!(
            items = results.len(),
            stored = revocations.len(),
            "batch revoked"
        );
        Ok(pb::RevokeBatchResponse { results })
    }

    async fn list_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<pb::ListRevocationsResponse, ApiError> {
        let caller = self.caller(&request)?;
        Access::require(caller.as_ref(), &[Role::Read])?;
        let request = request.into_inner();
        let (filter, page_size, page_token) =
            page_request(request.filter, request.page_size, &request.page_token)?;
        let page = self
            .state
            .store
            .list(&filter, page_size, page_token, unix_now())
            .await?;
        Ok(pb::ListRevocationsResponse {
            records: page.items.iter().map(record_message).collect(),
            next_page_token: page.next.unwrap_or_default(),
        })
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<pb::ListChangesResponse, ApiError> {
        let caller = self.caller(&request)?;
        Access::require(caller.as_ref(), &[Role::Read])?;
        let request = request.into_inner();
        let (filter, page_size, page_token) =
            page_request(request.filter, request.page_size, &request.page_token)?;
        let page = self
            .state
            .store
            .audit(&filter, page_size, page_token)
            .await?;
        let changes = page
            .items
            .iter()
            .map(|entry| pb::ChangeRecord {
                cursor: entry.cursor.clone(),
                logged_at_ms: entry.logged_at_ms,
                record: Some(record_message(&entry.record)),
            })
            .collect();
        Ok(pb::ListChangesResponse {
            changes,
            next_page_token: page.next.unwrap_or_default(),
        })
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

    /// `expires_at` must be positive and within `--max-token-lifetime`.
    fn check_expiry(&self, expires_at: i64, now: i64) -> Result<(), ApiError> {
        let policy = &self.state.policy;
        if expires_at < 0 {
            return Err(ApiError::invalid(
                "`expires_at` is negative; it is unix seconds",
            ));
        }
        let latest = now + policy.max_token_lifetime + policy.leeway;
        if expires_at > latest {
            return Err(ApiError::invalid(format!(
                "`expires_at` is {} s from now, beyond the longest token lifetime this server accepts ({} s); if your tokens really live that long, raise --max-token-lifetime",
                expires_at - now,
                policy.max_token_lifetime
            )));
        }
        Ok(())
    }

    async fn revoke_subject(
        &self,
        request: Request<RevokeSubjectRequest>,
    ) -> Result<RevokeSubjectResponse, ApiError> {
        let caller = self.caller(&request)?;
        let caller = Access::require(caller.as_ref(), &[Role::Revoke])?;
        self.take_rate(caller)?;
        let source = source_address(&request);
        let request = request.get_ref();
        request::identifier("subject", &request.subject)?;
        request::reason(&request.reason)?;
        let issuer = self.issuer(&request.issuer)?;
        let now = unix_now();
        let policy = &self.state.policy;
        let not_before = cutoff_time(request.not_before, now, policy.leeway)?;
        let keep_until = not_before + policy.max_token_lifetime + policy.leeway;
        if keep_until <= now {
            // Every token it would cover has expired already.
            return Ok(RevokeSubjectResponse {
                not_before,
                cursor: String::new(),
            });
        }
        let cutoff = SubjectCutoff {
            issuer,
            subject: request.subject.clone(),
            not_before,
            keep_until,
            provenance: Provenance {
                at: now,
                by: caller.name.clone(),
                reason: request.reason.clone(),
                source,
            },
        };
        let outcome = self.state.store.revoke_subject(&cutoff, now).await?;
        metrics::counter!("revocd_subject_cutoffs_total").increment(1);
        debug!(
            subject = cutoff.subject,
            not_before = outcome.not_before,
            "subject cut-off"
        );
        Ok(RevokeSubjectResponse {
            not_before: outcome.not_before,
            cursor: outcome.cursor.unwrap_or_default(),
        })
    }

    async fn check(&self, request: Request<CheckRequest>) -> Result<CheckResponse, ApiError> {
        let caller = self.caller(&request)?;
        Access::require(caller.as_ref(), &[Role::Read, Role::Subscribe])?;
        let request = request.get_ref();
        let now = unix_now();
        if request.token.is_empty() {
            request::identifier("jti", &request.jti)?;
            let issuer = self.issuer(&request.issuer)?;
            let status = self
                .state
                .store
                .status(&issuer, Some(&request.jti), None, now)
                .await?;
            return Ok(check_response(&status, None));
        }
        if !request.jti.is_empty() || !request.issuer.is_empty() {
            return Err(ApiError::invalid(
                "set either `token` or `jti`/`issuer`, not both",
            ));
        }
        let claims = self.state.verifier.verify(&request.token)?;
        // What gateways refuse, because no record could be kept for its
        // whole life, gets no "not revoked" from here either.
        let bounds = crate::bounds::TokenBounds {
            leeway: self.state.policy.leeway,
            max_token_lifetime: self.state.policy.max_token_lifetime,
        };
        bounds
            .judge(&claims, now)
            .map_err(|error| ApiError::invalid(format!("{error}; gateways refuse it")))?;
        if claims.jti.is_none() && claims.subject.is_none() {
            return Err(ApiError::invalid(
                "the token has neither `jti` nor `sub`; nothing can revoke it",
            ));
        }
        let status = self
            .state
            .store
            .status(
                &claims.issuer,
                claims.jti.as_deref(),
                claims.subject.as_deref(),
                now,
            )
            .await?;
        Ok(check_response(&status, Some(claims.issued_at)))
    }

    async fn stats(&self, request: Request<GetStatsRequest>) -> Result<Stats, ApiError> {
        let caller = self.caller(&request)?;
        Access::require(caller.as_ref(), &[Role::Read])?;
        let counts = self.state.store.counts(unix_now()).await?;
        let hub = self.state.hub.stats().await.unwrap_or_default();
        Ok(Stats {
            live_revocations: counts.revocations,
            live_subject_cutoffs: counts.subject_cutoffs,
            store: self.state.store.kind().to_owned(),
            version: crate::VERSION.to_owned(),
            uptime_seconds: self.state.started.elapsed().as_secs(),
            filter_generation: hub.generation,
            filter_bits: hub.filter_bits,
            subscribers: hub.subscribers as u64,
        })
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<FilterStream, ApiError> {
        let caller = self.caller(&request)?;
        let caller = Access::require(caller.as_ref(), &[Role::Subscribe])?;
        let limit = caller
            .limits
            .max_streams
            .unwrap_or(self.state.policy.max_streams_per_key);
        let permit = self.streams.acquire(&caller.name, limit).ok_or_else(|| {
            ApiError::ResourceExhausted(format!(
                "API key {:?} already holds {limit} filter streams on this replica (its max_streams, else --max-streams-per-key)",
                caller.name
            ))
        })?;
        let request = request.into_inner();
        request::text("gateway_id", &request.gateway_id, request::MAX_ID_BYTES)?;
        request::text("cursor", &request.cursor, request::MAX_CURSOR_BYTES)?;
        let params = SubscribeParams {
            cursor: request.cursor,
            generation: request.generation,
            gateway_id: request.gateway_id,
        };
        let updates = self.state.hub.subscribe(params).await?;
        Ok(FilterStream {
            updates,
            _permit: permit,
        })
    }
}

/// Most items of one `RevokeBatch`.
const MAX_BATCH_ITEMS: usize = 1_000;
/// Page size of listings when the caller names none, and the largest.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1_000;

/// A checked `Revoke` item.
enum Prepared {
    /// A revocation to store.
    Store(Revocation),
    /// The token has expired: the answer, with nothing to store.
    Expired(RevokeResponse),
}

fn over_rate_quota(caller: &Caller) -> ApiError {
    ApiError::ResourceExhausted(format!(
        "API key {:?} is over its quota of {} revocations per second; retry later",
        caller.name,
        caller.limits.max_revocations_per_second.unwrap_or_default()
    ))
}

fn over_live_quota(actor: &str, quota: Option<u64>) -> ApiError {
    ApiError::ResourceExhausted(format!(
        "API key {actor:?} already holds its quota of {} live revocations; more are accepted as its revocations expire",
        quota.unwrap_or_default()
    ))
}

/// The caller's address as `ip:port`, empty when the transport has none.
fn source_address<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map(|address| address.to_string())
        .unwrap_or_default()
}

fn count_revocation(outcome: &store::RevokeOutcome) {
    let result = if outcome.newly_revoked {
        "new"
    } else {
        "repeat"
    };
    metrics::counter!("revocd_revocations_total", "result" => result).increment(1);
}

fn revoke_response(revocation: &Revocation, outcome: store::RevokeOutcome) -> RevokeResponse {
    RevokeResponse {
        newly_revoked: outcome.newly_revoked,
        expires_at: revocation.expires_at,
        cursor: outcome.cursor.unwrap_or_default(),
    }
}

/// Checks the common parts of a listing request.
fn page_request(
    filter: Option<pb::RecordFilter>,
    page_size: u32,
    page_token: &str,
) -> Result<(RecordFilter, usize, Option<&str>), ApiError> {
    let filter = filter.unwrap_or_default();
    request::text("filter.subject", &filter.subject, request::MAX_ID_BYTES)?;
    request::text("filter.actor", &filter.actor, request::MAX_ID_BYTES)?;
    request::issuer(&filter.issuer)?;
    request::text("page_token", page_token, request::MAX_CURSOR_BYTES)?;
    if filter.since < 0 || filter.until < 0 {
        return Err(ApiError::invalid(
            "`filter.since` and `filter.until` are unix seconds, not negative",
        ));
    }
    let kind = match pb::RecordKind::try_from(filter.kind) {
        Ok(pb::RecordKind::Any) => None,
        Ok(pb::RecordKind::Token) => Some(RecordKind::Token),
        Ok(pb::RecordKind::Subject) => Some(RecordKind::Subject),
        Err(_) => return Err(ApiError::invalid("`filter.kind` is not a known RecordKind")),
    };
    let page_size = match page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        size => size.min(MAX_PAGE_SIZE),
    };
    let filter = RecordFilter {
        kind,
        subject: filter.subject,
        issuer: filter.issuer,
        actor: filter.actor,
        since: filter.since,
        until: filter.until,
    };
    Ok((
        filter,
        page_size,
        (!page_token.is_empty()).then_some(page_token),
    ))
}

/// The wire form of a stored record.
fn record_message(record: &Record) -> pb::RevocationRecord {
    let provenance = record.provenance();
    let record_field = match record {
        Record::Token(r) => pb::revocation_record::Record::Token(pb::TokenRevocation {
            issuer: r.issuer.clone(),
            jti: r.jti.clone(),
            subject: r.subject.clone(),
            expires_at: r.expires_at,
            keep_until: r.keep_until,
        }),
        Record::Subject(c) => pb::revocation_record::Record::Subject(pb::SubjectRevocation {
            issuer: c.issuer.clone(),
            subject: c.subject.clone(),
            not_before: c.not_before,
            keep_until: c.keep_until,
        }),
    };
    pb::RevocationRecord {
        record: Some(record_field),
        revoked_at: provenance.at,
        actor: provenance.by.clone(),
        reason: provenance.reason.clone(),
        source: provenance.source.clone(),
    }
}

/// The cut-off a `RevokeSubject` asks for, at `now`: tokens with
/// `iat < cut-off` are revoked, here, in the stores and in gateways.
///
/// `iat` has whole seconds, so "now" cannot be told apart from the rest of
/// its second. `0` takes the safe side: every token issued up to and
/// including the current second is revoked (the cut-off is `now + 1`),
/// including one issued in that second after the call; a client that logs
/// in again within that second gets a token already cut off and must retry
/// once the second ends. An explicit `t` keeps its meaning (`iat == t`
/// survives) and may be as late as `now + 1 + leeway`: every token issued up
/// to the current second on an issuer whose clock runs `leeway` ahead.
fn cutoff_time(requested: i64, now: i64, leeway: i64) -> Result<i64, ApiError> {
    let latest = now + 1 + leeway;
    match requested {
        0 => Ok(now + 1),
        t if t < 0 => Err(ApiError::invalid(
            "`not_before` is negative; it is unix seconds",
        )),
        t if t > latest => Err(ApiError::invalid(format!(
            "`not_before` is {} s in the future; a cut-off applies to tokens already issued, so it may be at most the clock leeway ({leeway} s) past the current second (0 means every token issued up to now)",
            t - now
        ))),
        t => Ok(t),
    }
}

/// Builds the answer to `Check`. `issued_at` is `Some` for a check by token
/// (then the subject cut-off applies); a token without `iat` cannot show it
/// was issued after a cut-off, so any cut-off revokes it.
fn check_response(status: &TokenStatus, issued_at: Option<Option<i64>>) -> CheckResponse {
    if let Some(revocation) = &status.revocation {
        return CheckResponse {
            revoked: true,
            revoked_at: revocation.provenance.at,
            expires_at: revocation.expires_at,
            reason: revocation.provenance.reason.clone(),
            revoked_by: revocation.provenance.by.clone(),
            by_subject: false,
            not_before: 0,
        };
    }
    match (&status.cutoff, issued_at) {
        (Some(cutoff), Some(iat)) if iat.is_none_or(|iat| iat < cutoff.not_before) => {
            CheckResponse {
                revoked: true,
                revoked_at: cutoff.provenance.at,
                expires_at: 0,
                reason: cutoff.provenance.reason.clone(),
                revoked_by: cutoff.provenance.by.clone(),
                by_subject: true,
                not_before: cutoff.not_before,
            }
        }
        _ => CheckResponse::default(),
    }
}

#[tonic::async_trait]
impl pb::revocation_service_server::RevocationService for RevocationService {
    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        observed("Revoke", RevocationService::revoke(self, request)).await
    }

    async fn revoke_subject(
        &self,
        request: Request<RevokeSubjectRequest>,
    ) -> Result<Response<RevokeSubjectResponse>, Status> {
        observed(
            "RevokeSubject",
            RevocationService::revoke_subject(self, request),
        )
        .await
    }

    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        observed("Check", RevocationService::check(self, request)).await
    }

    async fn get_stats(
        &self,
        request: Request<GetStatsRequest>,
    ) -> Result<Response<Stats>, Status> {
        observed("GetStats", self.stats(request)).await
    }

    async fn revoke_batch(
        &self,
        request: Request<pb::RevokeBatchRequest>,
    ) -> Result<Response<pb::RevokeBatchResponse>, Status> {
        observed(
            "RevokeBatch",
            RevocationService::revoke_batch(self, request),
        )
        .await
    }

    async fn list_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        observed("ListRevocations", self.list_revocations(request)).await
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        observed("ListChanges", self.list_changes(request)).await
    }

    type SubscribeStream = FilterStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        // Counts the call and how long opening the stream took.
        observed("Subscribe", RevocationService::subscribe(self, request)).await
    }
}

/// Runs one call, maps its error to a status, and records it:
/// `revocd_rpc_requests_total{method, code}` and
/// `revocd_rpc_duration_seconds{method}`.
async fn observed<T>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let started = std::time::Instant::now();
    // One span per RPC; `caller` is filled in once the key is known. Never
    // a secret: a key's name, not the key.
    let span = tracing::info_span!("rpc", method, caller = tracing::field::Empty);
    let result = call
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from);
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    metrics::counter!("revocd_rpc_requests_total", "method" => method, "code" => format!("{code:?}"))
        .increment(1);
    metrics::histogram!("revocd_rpc_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cutoff_of_now_covers_the_current_second_and_explicit_ones_keep_theirs() {
        let (now, leeway) = (1_000, 60);
        assert_eq!(cutoff_time(0, now, leeway).unwrap(), now + 1);
        assert_eq!(cutoff_time(now - 5, now, leeway).unwrap(), now - 5);
        assert_eq!(cutoff_time(now + 1, now, 0).unwrap(), now + 1, "as 0 would");
        assert_eq!(cutoff_time(now + 61, now, leeway).unwrap(), now + 61);
        let late = cutoff_time(now + 62, now, leeway).unwrap_err().to_string();
        assert!(late.contains("future") && late.contains("60 s"), "{late}");
        assert!(cutoff_time(-1, now, leeway).is_err());
    }

    #[test]
    fn a_cutoff_revokes_tokens_issued_before_it_not_at_it() {
        let cutoff = SubjectCutoff {
            issuer: "https://issuer.test".into(),
            subject: "alice".into(),
            not_before: 1_000,
            keep_until: 2_000,
            provenance: Provenance {
                at: 900,
                by: "auth-server".into(),
                reason: String::new(),
                source: String::new(),
            },
        };
        let status = TokenStatus {
            revocation: None,
            cutoff: Some(cutoff),
        };
        let revoked = |iat| check_response(&status, Some(iat)).revoked;
        assert!(revoked(Some(999)));
        assert!(!revoked(Some(1_000)));
        assert!(
            revoked(None),
            "without `iat` a token cannot show it is newer"
        );
        assert!(
            !check_response(&status, None).revoked,
            "a check by jti does not see cut-offs"
        );
    }
}
