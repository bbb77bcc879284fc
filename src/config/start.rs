//! Start-up: the running parts a configuration describes. Key files are
//! read and checked before any connection is attempted, so a mistake in a
//! flag is reported as one (exit 64), not as a failure of Redis.

use std::path::Path;
use std::time::Instant;

use tokio::net::TcpListener;

use super::{AgentConfig, ConfigError, ServeConfig, TransmitterSpec};
use crate::agent::{Agent, AgentError, Listeners};
use crate::auth::Access;
use crate::file::FileError;
use crate::filter::DigestKey;
use crate::gateway::{Gateway, GatewayConfig};
use crate::hub::FilterHub;
use crate::server::http::{Doors, Poll, Transmitter};
use crate::server::{Policy, State};
use crate::store::{self, MemoryStore, RedisNodes, RedisStore, RedisStoreOptions, Store};
use crate::tokens::{TokenVerifier, VerifierError};

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The flags do not fit together.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The token verifier cannot be built.
    #[error(transparent)]
    Verifier(#[from] VerifierError),
    /// The API-keys file is unusable.
    #[error("API keys: {0}")]
    ApiKeys(FileError),
    /// Redis cannot be reached.
    #[error("connecting to Redis: {0}")]
    Store(#[from] store::Error),
    /// The digest key file is unusable.
    #[error("--digest-key-file: {0}")]
    DigestKey(FileError),
    /// A TLS file is unusable.
    #[error("TLS: {0}")]
    Tls(FileError),
    /// A Shared Signals poll token file is unusable.
    #[error("the poll token of a Shared Signals transmitter: {0}")]
    SsfPoll(FileError),
}

/// The transmitter `spec` describes: its keys bound to its issuer, events
/// naming `audience`, and where to poll it.
fn transmitter(
    spec: TransmitterSpec,
    audience: &[String],
    leeway: u64,
) -> Result<Transmitter, StartError> {
    let verifier = TokenVerifier::builder()
        .audiences(audience)
        .leeway_seconds(leeway)
        .issuer_key_file(&spec.issuer, &spec.keys)
        .map_err(VerifierError::from)?
        .build()
        .map_err(VerifierError::from)?;
    let poll = match spec.poll_url {
        None => None,
        Some(url) => Some(Poll {
            url,
            token: spec
                .poll_token_file
                .as_deref()
                .map(read_secret)
                .transpose()
                .map_err(StartError::SsfPoll)?,
            interval: spec.poll_interval,
            tls: crate::tls::system_roots_connector(),
        }),
    };
    let token_issuers = if spec.token_issuers.is_empty() {
        vec![spec.issuer.clone()]
    } else {
        spec.token_issuers
    };
    Ok(Transmitter {
        issuer: spec.issuer,
        verifier,
        token_issuers,
        poll,
    })
}

/// A secret in a file, surrounding whitespace ignored; not empty.
fn read_secret(path: &Path) -> Result<String, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::read(path, e))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(FileError::invalid(path, "it is empty"));
    }
    Ok(secret.to_owned())
}

impl ServeConfig {
    /// The state of a replica: loads keys, connects the store and starts
    /// the filter hub. `dev_secret` is an extra HS256 secret trusted in
    /// `--dev` (the generated one).
    ///
    /// # Errors
    /// Invalid flags, unusable key files, or a Redis that does not answer.
    pub async fn start_state(&self, dev_secret: Option<&[u8]>) -> Result<State, StartError> {
        self.validate()?;
        let verifier = self.jwt.verifier(dev_secret)?;
        verifier.read_claims(
            self.revocable_claim
                .iter()
                .map(|c| c.as_str().into())
                .collect(),
        );
        let tls = self.tls.server_config().map_err(StartError::Tls)?;
        if let Some(tls) = &tls {
            // Certificates and keys are parsed here: refuse bad ones now,
            // not at the first connection.
            let path = self.tls.tls_cert.as_deref().unwrap_or(Path::new(""));
            tonic::transport::Server::builder()
                .tls_config(tls.clone())
                .map_err(|e| StartError::Tls(FileError::invalid(path, e.to_string())))?;
        }
        let access = match (self.dev, &self.api_keys_file) {
            (true, _) => Access::Open,
            (false, Some(path)) => Access::from_keys_file(path).map_err(StartError::ApiKeys)?,
            (false, None) => return Err(ConfigError::NoApiKeys.into()),
        };
        let preset_key = self
            .digest_key_file
            .as_deref()
            .map(read_digest_key)
            .transpose()?;
        let store = self.open_store().await?;
        let digest_key = store.digest_key(preset_key).await?;
        store.pin_leeway(self.jwt.leeway).await?;
        Ok(State {
            verifier,
            access,
            store: store.clone(),
            hub: FilterHub::spawn(store, digest_key, self.hub_config()),
            policy: self.policy(),
            started: Instant::now(),
            tls,
            doors: self.doors(dev_secret)?,
        })
    }

    /// What the HTTP doors verify with: the JWT keys for back-channel
    /// logout tokens (when an audience is given), and the transmitter.
    fn doors(&self, dev_secret: Option<&[u8]>) -> Result<Doors, StartError> {
        let logout_tokens = if self.backchannel_audience.is_empty() {
            None
        } else {
            Some(
                self.jwt
                    .verifier_for(&self.backchannel_audience, dev_secret)?,
            )
        };
        let audience = self.ssf_audience.as_slice();
        let transmitters = self
            .transmitters()?
            .into_iter()
            .map(|spec| transmitter(spec, audience, self.jwt.leeway))
            .collect::<Result<_, _>>()?;
        Ok(Doors {
            logout_tokens,
            transmitters,
            tls: self.tls.http_config().map_err(StartError::Tls)?,
        })
    }

    /// The rules applied to every request.
    pub fn policy(&self) -> Policy {
        Policy {
            leeway: self.jwt.leeway as i64,
            max_token_lifetime: self.max_token_lifetime.as_secs() as i64,
            default_issuer: self.jwt.default_issuer().to_owned(),
            max_streams_per_key: self.max_streams_per_key,
            keyless: self.keyless_limits(),
            revocable_claims: self.revocable_claim.clone(),
        }
    }

    /// The store the flags name: Redis (one node or a cluster), or memory.
    async fn open_store(&self) -> Result<Store, store::Error> {
        let (nodes, default_partitions) = match (&self.redis_url, &self.redis_cluster) {
            (Some(url), _) => (RedisNodes::Single(url.clone()), 1),
            (None, urls) if !urls.is_empty() => (RedisNodes::Cluster(urls.clone()), 16),
            (None, _) => return Ok(Store::Memory(MemoryStore::new(self.log_retention as usize))),
        };
        let options = RedisStoreOptions {
            nodes,
            key_prefix: self.key_prefix.clone(),
            partitions: self.log_partitions.unwrap_or(default_partitions),
            log_retention: self.log_retention,
            entry_format: self.log_entry_format,
            response_timeout: self.redis_timeout,
            durability: self.durability,
            wait_replicas: self.wait_replicas,
        };
        Ok(Store::Redis(RedisStore::connect(&options).await?))
    }
}

/// The digest key of `--digest-key-file`: hex digits, surrounding
/// whitespace ignored.
fn read_digest_key(path: &Path) -> Result<DigestKey, StartError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::read(path, e));
    let text = text.map_err(StartError::DigestKey)?;
    let invalid = |detail: String| StartError::DigestKey(FileError::invalid(path, detail));
    let bytes = hex::decode(text.trim()).map_err(|_| invalid("not hex digits".into()))?;
    DigestKey::from_slice(&bytes).map_err(|e| invalid(e.to_string()))
}

impl AgentConfig {
    /// The agent: its gateway starts following the servers at once.
    ///
    /// # Errors
    /// [`AgentError`] for unusable keys, URLs or header names.
    pub fn start_agent(&self) -> Result<Agent, AgentError> {
        // Install the recorder before the first decision is counted.
        crate::telemetry::prometheus();
        let verifier = self.jwt.verifier(None)?;
        let mut gateway_config = GatewayConfig::new(self.servers.clone())
            .gateway_id(self.gateway_id.clone())
            .max_staleness(self.max_staleness)
            .on_stale(self.on_stale);
        if let Some(key) = self.read_api_key()? {
            gateway_config = gateway_config.api_key(&key)?;
        }
        if let Some(tls) = self.tls.client_config().map_err(AgentError::Tls)? {
            gateway_config = gateway_config.tls(tls);
        }
        if let Some(dir) = &self.state_dir {
            gateway_config = gateway_config.state_dir(dir);
        }
        let token_header = ::http::HeaderName::try_from(self.token_header.as_str())
            .map_err(|_| AgentError::TokenHeader(self.token_header.clone()))?;
        let introspection = self
            .introspection_keys_file
            .as_deref()
            .map(Access::from_keys_file)
            .transpose()
            .map_err(AgentError::IntrospectionKeys)?;
        let agent = Agent::new(Gateway::spawn(gateway_config, verifier)?, token_header);
        Ok(match introspection {
            Some(access) => agent.with_introspection(access),
            None => agent,
        })
    }

    /// The agent's sockets, bound to the configured addresses.
    ///
    /// # Errors
    /// An address that cannot be bound.
    pub async fn bind(&self) -> std::io::Result<Listeners> {
        let optional = |address: Option<std::net::SocketAddr>| async move {
            match address {
                Some(address) => TcpListener::bind(address).await.map(Some),
                None => Ok(None),
            }
        };
        Ok(Listeners {
            http: TcpListener::bind(self.http_listen).await?,
            ext_authz: optional(self.ext_authz_listen).await?,
            metrics: optional(self.metrics_listen).await?,
        })
    }

    /// The API key of `--api-key-file` (trimmed) or `--api-key`.
    fn read_api_key(&self) -> Result<Option<String>, AgentError> {
        match (&self.api_key_file, &self.api_key) {
            (Some(path), _) => {
                let key = std::fs::read_to_string(path)
                    .map_err(|e| AgentError::ApiKey(FileError::read(path, e)))?;
                Ok(Some(key.trim().to_owned()))
            }
            (None, key) => Ok(key.clone()),
        }
    }
}
