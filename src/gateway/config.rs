//! How a gateway reaches revocd and what it does when its filter is stale.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::backoff::ExponentialBackoff;

/// Default staleness past which the [`StalePolicy`] applies.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(30);

/// What to do when the filter is stale or not loaded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StalePolicy {
    /// Keep answering from the last filter (revocations made meanwhile are
    /// missed until the stream returns).
    FailOpen,
    /// Refuse every token.
    FailClosed,
    /// Ask the server about every token (the default: safe, and available
    /// while any replica answers).
    #[default]
    CheckOnline,
}

impl std::str::FromStr for StalePolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "fail-open" => Ok(StalePolicy::FailOpen),
            "fail-closed" => Ok(StalePolicy::FailClosed),
            "check-online" => Ok(StalePolicy::CheckOnline),
            other => Err(format!(
                "{other:?} is not fail-open, fail-closed or check-online"
            )),
        }
    }
}

/// How a gateway reaches revocd.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub(super) endpoints: Vec<String>,
    /// Where `Check` calls (confirms) go; empty: `endpoints`.
    pub(super) confirm_endpoints: Vec<String>,
    pub(super) api_key: Option<MetadataValue<Ascii>>,
    pub(super) gateway_id: String,
    pub(super) max_staleness: Duration,
    pub(super) on_stale: StalePolicy,
    /// A stream silent this long is dropped and re-established.
    pub(super) idle_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) backoff: ExponentialBackoff,
    pub(super) tls: Option<ClientTlsConfig>,
    /// Where the filter is kept between runs; `None`: nowhere.
    pub(super) state_dir: Option<PathBuf>,
}

/// Why a gateway could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No endpoint, or one that is not a URL.
    #[error("invalid endpoint {0:?}")]
    Endpoint(String),
    /// An API key that cannot be sent as metadata.
    #[error("the API key contains characters not allowed in gRPC metadata")]
    ApiKey,
    /// A TLS configuration the transport refuses.
    #[error("TLS: {0}")]
    Tls(String),
}

impl GatewayConfig {
    /// Endpoints to subscribe to, tried in turn (`http://host:port`).
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        GatewayConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            confirm_endpoints: Vec::new(),
            api_key: None,
            gateway_id: "gateway".into(),
            max_staleness: DEFAULT_MAX_STALENESS,
            on_stale: StalePolicy::default(),
            idle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            // Valid constants: min below max, jitter within [0, 1].
            backoff: ExponentialBackoff::try_new(
                Duration::from_millis(100),
                Duration::from_secs(5),
                0.3,
            )
            .expect("valid backoff"),
            tls: None,
            state_dir: None,
        }
    }

    /// Endpoints for the `Check` calls that settle a filter "maybe"
    /// (`http://host:port`, balanced over all of them), when they must
    /// differ from the subscription endpoints: a path through another
    /// proxy, or replicas kept for reads. By default confirms go to the
    /// endpoints given to [`GatewayConfig::new`].
    pub fn confirm_endpoints<S: Into<String>>(
        mut self,
        endpoints: impl IntoIterator<Item = S>,
    ) -> Self {
        self.confirm_endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// TLS towards the servers (for `https://` endpoints): the CA to trust
    /// and, for mutual TLS, the certificate to present.
    pub fn tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The API key (role `subscribe`) sent with every call.
    ///
    /// # Errors
    /// [`Error::ApiKey`] for a key that is not ASCII metadata.
    pub fn api_key(mut self, key: &str) -> Result<Self, Error> {
        let value = format!("Bearer {}", key.trim())
            .parse()
            .map_err(|_| Error::ApiKey)?;
        self.api_key = Some(value);
        Ok(self)
    }

    /// A name for this gateway in the server's logs.
    pub fn gateway_id(mut self, id: impl Into<String>) -> Self {
        self.gateway_id = id.into();
        self
    }

    /// Staleness past which `on_stale` applies.
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.max_staleness = staleness;
        self
    }

    /// What to do when stale.
    pub fn on_stale(mut self, policy: StalePolicy) -> Self {
        self.on_stale = policy;
        self
    }

    /// The reconnect schedule.
    pub fn backoff(mut self, backoff: ExponentialBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A stream silent this long is re-established (default 10 s; keep it
    /// above the server's heartbeat interval).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Keeps the filter and its position in `dir` (created if needed), so
    /// that after a restart the gateway resumes with the deltas it missed
    /// rather than a whole snapshot, when the server it reconnects to
    /// still has them. The file is checked when read, and a saved filter
    /// is used only once the server has resumed from it (see
    /// `src/gateway/state.rs`).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// The subscription endpoints, parsed.
    pub(super) fn parsed_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        self.parse(&self.endpoints)
    }

    /// The confirm endpoints, parsed, with their call timeout.
    pub(super) fn parsed_confirm_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        let urls = if self.confirm_endpoints.is_empty() {
            &self.endpoints
        } else {
            &self.confirm_endpoints
        };
        let endpoints = self.parse(urls)?;
        Ok(endpoints
            .into_iter()
            .map(|e| e.timeout(self.connect_timeout))
            .collect())
    }

    fn parse(&self, urls: &[String]) -> Result<Vec<Endpoint>, Error> {
        if urls.is_empty() {
            return Err(Error::Endpoint(String::new()));
        }
        urls.iter()
            .map(|url| {
                let mut endpoint =
                    Endpoint::from_shared(url.clone()).map_err(|_| Error::Endpoint(url.clone()))?;
                if let Some(tls) = &self.tls {
                    endpoint = endpoint
                        .tls_config(tls.clone())
                        .map_err(|e| Error::Tls(e.to_string()))?;
                }
                // No call timeout here: a subscription may wait for a
                // replica's first load; confirm calls set their own.
                Ok(endpoint.connect_timeout(self.connect_timeout))
            })
            .collect()
    }
}
