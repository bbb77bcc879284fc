//! The Shared Signals transmitters of `revocd serve`: from the
//! `--ssf-issuer` flags (one), the `--ssf-transmitter*` flags and
//! `[[ssf.transmitter]]` tables (any number), put together by issuer.

use std::path::PathBuf;
use std::time::Duration;

use super::jwt::split_issuer;
use super::{ConfigError, ServeConfig};

/// A value given to one transmitter, `TRANSMITTER=VALUE`: a token issuer
/// it may cut off, or its poll URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransmitterValue {
    /// The transmitter's issuer.
    pub transmitter: String,
    /// The value.
    pub value: String,
}

impl std::str::FromStr for TransmitterValue {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (transmitter, value) = split_issuer(text, "VALUE", "https://api.example.com")?;
        Ok(TransmitterValue { transmitter, value })
    }
}

impl std::fmt::Display for TransmitterValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.transmitter, self.value)
    }
}

/// One transmitter, as the flags describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransmitterSpec {
    /// Its `iss`.
    pub issuer: String,
    /// Its public keys: a JWKS or PEM public key file.
    pub keys: PathBuf,
    /// Token issuers its events may cut off; empty: its own.
    pub token_issuers: Vec<String>,
    /// Its RFC 8936 poll endpoint, if revocd polls it.
    pub poll_url: Option<hyper::Uri>,
    /// The poll endpoint's bearer token file.
    pub poll_token_file: Option<PathBuf>,
    /// Pause between polls while it has nothing pending.
    pub poll_interval: Duration,
}

impl ServeConfig {
    /// Every transmitter the flags describe, each once, in the order
    /// given.
    ///
    /// # Errors
    /// A transmitter named twice, a `--ssf-transmitter-*` value naming no
    /// transmitter, a poll URL that is not one, or transmitters without
    /// `--ssf-audience`.
    pub fn transmitters(&self) -> Result<Vec<TransmitterSpec>, ConfigError> {
        let spec = |issuer: &str, keys: &PathBuf| TransmitterSpec {
            issuer: issuer.to_owned(),
            keys: keys.clone(),
            token_issuers: Vec::new(),
            poll_url: None,
            poll_token_file: None,
            poll_interval: self.ssf_poll_interval,
        };
        let mut specs: Vec<TransmitterSpec> = Vec::new();
        if let (Some(issuer), Some(keys)) = (&self.ssf_issuer, &self.ssf_jwks_file) {
            specs.push(TransmitterSpec {
                token_issuers: self.ssf_token_issuer.clone(),
                poll_url: self.ssf_poll_url.clone(),
                poll_token_file: self.ssf_poll_token_file.clone(),
                ..spec(issuer, keys)
            });
        }
        for bound in &self.ssf_transmitter {
            if specs.iter().any(|s| s.issuer == bound.issuer) {
                return Err(ConfigError::Transmitter(format!(
                    "transmitter {:?} is given twice",
                    bound.issuer
                )));
            }
            specs.push(spec(&bound.issuer, &bound.path));
        }
        for given in &self.ssf_transmitter_token_issuer {
            let spec = named(&mut specs, &given.transmitter, "token-issuer")?;
            spec.token_issuers.push(given.value.clone());
        }
        for given in &self.ssf_transmitter_poll_url {
            let spec = named(&mut specs, &given.transmitter, "poll-url")?;
            let url = given.value.parse().map_err(|e| {
                ConfigError::Transmitter(format!("poll URL {:?}: {e}", given.value))
            })?;
            spec.poll_url = Some(url);
        }
        for given in &self.ssf_transmitter_poll_token_file {
            let spec = named(&mut specs, &given.issuer, "poll-token-file")?;
            spec.poll_token_file = Some(given.path.clone());
        }
        if !specs.is_empty() && self.ssf_audience.is_none() {
            return Err(ConfigError::Transmitter(
                "Shared Signals transmitters need --ssf-audience, the audience their events name"
                    .into(),
            ));
        }
        Ok(specs)
    }
}

/// The transmitter `--ssf-transmitter-<flag>` names.
fn named<'s>(
    specs: &'s mut [TransmitterSpec],
    transmitter: &str,
    flag: &str,
) -> Result<&'s mut TransmitterSpec, ConfigError> {
    specs
        .iter_mut()
        .find(|spec| spec.issuer == transmitter)
        .ok_or_else(|| {
            ConfigError::Transmitter(format!(
                "--ssf-transmitter-{flag} names transmitter {transmitter:?}, which no --ssf-transmitter (or --ssf-issuer) gives"
            ))
        })
}
