//! How tokens are verified: the JWT flags of `revocd serve` and `revocd agent`.

use std::path::PathBuf;

use clap::Args;

use crate::bounds::DEFAULT_LEEWAY_SECONDS;
use crate::tokens::{TokenVerifier, VerifierError};

/// How tokens are verified: the same flags for `revocd serve` and
/// `revocd agent`.
///
/// Every key verifies the tokens of one issuer (see [`crate::tokens`]).
/// `--jwt-issuer-key` and `--jwt-issuer-hs256-secret-file` bind a key to
/// its issuer, and the issuer is then accepted. The older key flags bind
/// nothing: their keys belong to the one accepted issuer, or to any issuer
/// when none is given; with two or more issuers they are refused at start,
/// as a key that speaks for every issuer lets each one sign for the others.
#[derive(Debug, Clone, Args)]
#[deny(missing_docs)]
pub struct JwtArgs {
    /// File holding the HS256 secret that signs tokens (of the one
    /// --jwt-issuer; bind it with --jwt-issuer-hs256-secret-file when there
    /// are several).
    #[arg(long, env = "REVOCD_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,

    /// PEM file of a public key (RSA, EC or Ed25519) that signs tokens (of
    /// the one --jwt-issuer); repeatable.
    #[arg(long, env = "REVOCD_JWT_PUBLIC_KEY_FILE", value_delimiter = ',')]
    pub jwt_public_key_file: Vec<PathBuf>,

    /// JWKS file of the keys that sign tokens (of the one --jwt-issuer),
    /// matched by `kid`.
    #[arg(long, env = "REVOCD_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Public keys of one issuer, as `ISSUER=PATH`: a PEM public key or a
    /// JWKS file (told apart by its content); they verify that issuer's
    /// tokens only, and the issuer is accepted. Repeatable.
    #[arg(
        long,
        env = "REVOCD_JWT_ISSUER_KEY",
        value_delimiter = ',',
        value_name = "ISSUER=PATH"
    )]
    pub jwt_issuer_key: Vec<IssuerFile>,

    /// HS256 secret of one issuer, as `ISSUER=PATH` (a file holding the
    /// secret); it verifies that issuer's tokens only, and the issuer is
    /// accepted. Repeatable.
    #[arg(
        long,
        env = "REVOCD_JWT_ISSUER_HS256_SECRET_FILE",
        value_delimiter = ',',
        value_name = "ISSUER=PATH"
    )]
    pub jwt_issuer_hs256_secret_file: Vec<IssuerFile>,

    /// Accepted token issuer (`iss`); repeatable. Issuers bound to a key
    /// are accepted too. With exactly one issuer in all, it is the default
    /// issuer of requests that name none, and owns the unbound keys.
    #[arg(long, env = "REVOCD_JWT_ISSUER", value_delimiter = ',')]
    pub jwt_issuer: Vec<String>,

    /// Accepted token audience (`aud`); repeatable. Unset: `aud` is not
    /// checked.
    #[arg(long, env = "REVOCD_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,

    /// Clock leeway for `exp` and `nbf`, in seconds; revocation records
    /// outlive their token's `exp` by this much.
    #[arg(long, env = "REVOCD_LEEWAY", default_value_t = DEFAULT_LEEWAY_SECONDS)]
    pub leeway: u64,
}

impl JwtArgs {
    /// The verifier these flags describe, also trusting `extra_secret` (the
    /// generated `--dev` secret) for HS256, unbound.
    ///
    /// # Errors
    /// An unusable key file, unbound keys beside several issuers, or a
    /// build without a crypto backend.
    pub fn verifier(&self, extra_secret: Option<&[u8]>) -> Result<TokenVerifier, VerifierError> {
        self.verifier_for(&self.jwt_audience, extra_secret)
    }

    /// The verifier of these flags' keys and issuers for tokens of other
    /// `audiences`: OpenID back-channel logout tokens, which name this
    /// deployment's client id.
    ///
    /// # Errors
    /// As [`JwtArgs::verifier`].
    pub fn verifier_for(
        &self,
        audiences: &[String],
        extra_secret: Option<&[u8]>,
    ) -> Result<TokenVerifier, VerifierError> {
        crate::tokens::ensure_crypto_backend()?;
        let mut builder = TokenVerifier::builder()
            .issuers(&self.jwt_issuer)
            .audiences(audiences)
            .leeway_seconds(self.leeway);
        if let Some(path) = &self.jwt_hs256_secret_file {
            builder = builder.hs256_secret_file(path)?;
        }
        if let Some(secret) = extra_secret {
            builder = builder.hs256_secret(secret)?;
        }
        for path in &self.jwt_public_key_file {
            builder = builder.public_key_pem_file(path)?;
        }
        if let Some(path) = &self.jwks_file {
            builder = builder.jwks_file(path)?;
        }
        for bound in &self.jwt_issuer_key {
            builder = builder.issuer_key_file(&bound.issuer, &bound.path)?;
        }
        for bound in &self.jwt_issuer_hs256_secret_file {
            builder = builder.issuer_hs256_secret_file(&bound.issuer, &bound.path)?;
        }
        Ok(builder.build()?)
    }

    /// The issuers accepted: those of --jwt-issuer, then those bound to a
    /// key, each once.
    pub fn issuers(&self) -> Vec<&str> {
        let bound = self
            .jwt_issuer_key
            .iter()
            .chain(&self.jwt_issuer_hs256_secret_file)
            .map(|file| file.issuer.as_str());
        let mut issuers: Vec<&str> = Vec::new();
        for issuer in self.jwt_issuer.iter().map(String::as_str).chain(bound) {
            if !issuers.contains(&issuer) {
                issuers.push(issuer);
            }
        }
        issuers
    }

    /// The issuer of requests that name none: the one accepted issuer,
    /// else the empty issuer.
    pub fn default_issuer(&self) -> &str {
        match self.issuers().as_slice() {
            [only] => only,
            _ => "",
        }
    }
}

/// A key file bound to the issuer whose tokens it verifies: the value of
/// `--jwt-issuer-key` and `--jwt-issuer-hs256-secret-file`, written
/// `ISSUER=PATH`. The issuer ends at the first `=`, so it cannot hold one
/// (OpenID Connect issuers have no query part); the path may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerFile {
    /// The issuer (`iss`) the key speaks for.
    pub issuer: String,
    /// The key file.
    pub path: PathBuf,
}

impl std::str::FromStr for IssuerFile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (issuer, path) = split_issuer(text, "PATH", "/etc/revocd/auth.pem")?;
        Ok(IssuerFile {
            issuer,
            path: PathBuf::from(path),
        })
    }
}

/// `ISSUER=VALUE` split at the first `=`, neither part empty; `what` and
/// `example` name the value in the error.
pub(super) fn split_issuer(
    text: &str,
    what: &str,
    example: &str,
) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((issuer, value)) if !issuer.trim().is_empty() && !value.trim().is_empty() => {
            Ok((issuer.to_owned(), value.to_owned()))
        }
        Some(_) => Err(format!("expected ISSUER={what} with neither part empty")),
        None => Err(format!(
            "expected ISSUER={what}, e.g. https://auth.example.com={example}"
        )),
    }
}

impl std::fmt::Display for IssuerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.issuer, self.path.display())
    }
}
