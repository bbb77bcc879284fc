//! Callers and what they may do: API keys, roles, and the check made at the
//! start of every RPC.
//!
//! Keys are configured in a TOML file, stored only as SHA-256 digests:
//!
//! ```toml
//! [[key]]
//! name = "auth-server"
//! sha256 = "<hex of the SHA-256 of the key>"
//! roles = ["revoke"]
//! # Optional quotas (per replica for the rate and streams; the live count
//! # is kept in the store, so it holds across replicas):
//! max_revocations_per_second = 100
//! max_live_revocations = 100000
//! max_streams = 10
//! ```
//!
//! A caller sends its key as gRPC metadata `authorization: Bearer <key>`.
//! The presented key is hashed and its digest looked up among the
//! configured ones ([`KeyTable`]): timing can tell a caller nothing but
//! facts about the digest of what it presented, never a configured key.
//!
//! Behind mutual TLS (`--tls-client-ca`), an entry may name a client
//! certificate instead of (or as well as) a key: `client_cert_cn = "…"`
//! grants the entry's roles to a caller whose verified certificate has that
//! subject common name and who sends no key.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::file::FileError;
use sha2::{Digest, Sha256};

/// Longest `authorization` value read, in bytes.
const MAX_AUTHORIZATION_BYTES: usize = 1024;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Revoke by jti, revoke subjects.
    Revoke,
    /// Check tokens, read statistics.
    Read,
    /// Subscribe to the filter stream; also check tokens.
    Subscribe,
    /// Everything.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Revoke => "revoke",
            Role::Read => "read",
            Role::Subscribe => "subscribe",
            Role::Admin => "admin",
        })
    }
}

/// Quotas of one API key; `None` is no limit beyond the server's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Revocations (by jti, by token with the key, and subject cut-offs)
    /// per second on one replica, with a burst of one second's worth.
    pub max_revocations_per_second: Option<u32>,
    /// Live token revocations made with the key, across the deployment: a
    /// defence against one key flooding the filter.
    pub max_live_revocations: Option<u64>,
    /// Filter streams the key may hold open on one replica (overrides
    /// `--max-streams-per-key`).
    pub max_streams: Option<usize>,
}

/// The authenticated caller of one RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name, recorded as the author of the caller's changes.
    pub name: String,
    /// The key's quotas.
    pub limits: Limits,
    roles: Roles,
}

impl Caller {
    /// True when the caller holds any of `roles` (or `admin`).
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.contains(Role::Admin) || roles.iter().any(|&r| self.roles.contains(r))
    }
}

/// A set of [`Role`]s, one bit each: a caller is made on every call, and
/// copying these bits costs nothing where a `HashSet` was allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Roles(u8);

impl Roles {
    fn bit(role: Role) -> u8 {
        1 << role as u8
    }

    fn contains(self, role: Role) -> bool {
        self.0 & Self::bit(role) != 0
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(roles: I) -> Self {
        Roles(
            roles
                .into_iter()
                .fold(0, |bits, role| bits | Self::bit(role)),
        )
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("this call needs an API key: send gRPC metadata `authorization: Bearer <key>`")]
    MissingKey,
    /// `authorization` is not `Bearer <key>`.
    #[error("the `authorization` metadata must be `Bearer <key>`")]
    MalformedHeader,
    /// No configured key matches.
    #[error("the API key is not recognised")]
    UnknownKey,
    /// The key lacks the role the call needs.
    #[error("API key {name:?} lacks the role this call needs (one of: {needed})")]
    Forbidden {
        /// The key's name.
        name: String,
        /// The roles that would do, comma-separated.
        needed: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    sha256: Option<String>,
    client_cert_cn: Option<String>,
    roles: Vec<Role>,
    max_revocations_per_second: Option<u32>,
    max_live_revocations: Option<u64>,
    max_streams: Option<usize>,
}

/// A configured API key: its name, digest (never the key) or client
/// certificate name, roles and quotas.
pub struct ApiKey {
    name: String,
    digest: Option<[u8; 32]>,
    client_cert_cn: Option<String>,
    roles: Roles,
    limits: Limits,
}

/// How callers are authenticated.
pub enum Access {
    /// `--dev`: every caller is `dev` with every role. Loopback only.
    Open,
    /// Callers present one of these keys.
    Keys(KeyTable),
}

/// The configured keys, and which one each SHA-256 digest names.
///
/// A presented key is hashed and its digest looked up in a map: one lookup
/// whatever the number of keys, where comparing it with each key's digest
/// in constant time cost about 370 instructions per key on every call.
/// The lookup's timing can only tell a caller about the digest of what it
/// presented, which it knows already; the keys cannot be learned from it
/// (that would take a SHA-256 preimage).
pub struct KeyTable {
    keys: Vec<ApiKey>,
    by_digest: HashMap<[u8; 32], usize>,
}

impl KeyTable {
    fn new(keys: Vec<ApiKey>) -> Self {
        // A digest listed twice names the last key listed with it.
        let by_digest = keys
            .iter()
            .enumerate()
            .filter_map(|(index, key)| Some((key.digest?, index)))
            .collect();
        KeyTable { keys, by_digest }
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is configured (a loaded file always has one).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn by_digest(&self, digest: &[u8; 32]) -> Option<&ApiKey> {
        self.by_digest.get(digest).map(|&index| &self.keys[index])
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Open => f.write_str("Access::Open"),
            Access::Keys(table) => write!(f, "Access::Keys({} keys)", table.len()),
        }
    }
}

// === impl Access ===

impl Access {
    /// Loads an API-keys file.
    ///
    /// # Errors
    /// An unreadable file, unknown fields or roles, a digest that is not 64
    /// hex digits, an empty or repeated name, a key with no roles.
    pub fn from_keys_file(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError::read(path, e))?;
        Self::from_toml(&text).map_err(|detail| FileError::invalid(path, detail))
    }

    /// Parses the API-keys TOML (see the module doc).
    ///
    /// # Errors
    /// What is wrong, for a person to fix.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut names = HashSet::new();
        let mut keys = Vec::with_capacity(file.key.len());
        for entry in file.key {
            if entry.name.trim().is_empty() {
                return Err("a key has an empty name".into());
            }
            if !names.insert(entry.name.clone()) {
                return Err(format!("key name {:?} is used twice", entry.name));
            }
            if entry.roles.is_empty() {
                return Err(format!("key {:?} has no roles", entry.name));
            }
            let digest = match &entry.sha256 {
                Some(text) => Some(parse_digest(text).ok_or_else(|| {
                    format!("key {:?}: sha256 must be 64 hex digits", entry.name)
                })?),
                None => None,
            };
            if digest.is_none() && entry.client_cert_cn.is_none() {
                return Err(format!(
                    "key {:?} has neither sha256 nor client_cert_cn: nothing could present it",
                    entry.name
                ));
            }
            if entry.client_cert_cn.as_deref().is_some_and(str::is_empty) {
                return Err(format!("key {:?} has an empty client_cert_cn", entry.name));
            }
            let limits = Limits {
                max_revocations_per_second: entry.max_revocations_per_second,
                max_live_revocations: entry.max_live_revocations,
                max_streams: entry.max_streams,
            };
            if limits.max_revocations_per_second == Some(0)
                || limits.max_live_revocations == Some(0)
                || limits.max_streams == Some(0)
            {
                return Err(format!(
                    "key {:?}: a quota of 0 would refuse every call; remove the role instead",
                    entry.name
                ));
            }
            keys.push(ApiKey {
                name: entry.name,
                digest,
                client_cert_cn: entry.client_cert_cn,
                roles: entry.roles.into_iter().collect(),
                limits,
            });
        }
        if keys.is_empty() {
            return Err("no [[key]] entries".into());
        }
        Ok(Access::Keys(KeyTable::new(keys)))
    }

    /// Identifies the caller from its `authorization` metadata value or,
    /// when it sends none, from the common name of its verified client
    /// certificate. Returns `Ok(None)` when neither names a caller.
    ///
    /// # Errors
    /// A malformed header or a key that is not configured.
    pub fn caller(
        &self,
        authorization: Option<&[u8]>,
        client_cert_cn: Option<&str>,
    ) -> Result<Option<Caller>, AuthError> {
        let keys = match self {
            Access::Open => {
                return Ok(Some(Caller {
                    name: "dev".into(),
                    limits: Limits::default(),
                    roles: Roles::from_iter([Role::Admin]),
                }))
            }
            Access::Keys(table) => table,
        };
        let Some(value) = authorization else {
            let key = client_cert_cn.and_then(|cn| {
                keys.keys
                    .iter()
                    .find(|key| key.client_cert_cn.as_deref() == Some(cn))
            });
            return Ok(key.map(ApiKey::caller));
        };
        if value.len() > MAX_AUTHORIZATION_BYTES {
            return Err(AuthError::MalformedHeader);
        }
        let presented = value
            .strip_prefix(b"Bearer ")
            .map(<[u8]>::trim_ascii)
            .filter(|key| !key.is_empty())
            .ok_or(AuthError::MalformedHeader)?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let key = keys.by_digest(&digest).ok_or(AuthError::UnknownKey)?;
        Ok(Some(key.caller()))
    }

    /// Requires a caller holding one of `roles`.
    ///
    /// # Errors
    /// [`AuthError::MissingKey`] with no caller, [`AuthError::Forbidden`]
    /// when the caller lacks the roles.
    pub fn require<'c>(
        caller: Option<&'c Caller>,
        roles: &[Role],
    ) -> Result<&'c Caller, AuthError> {
        let caller = caller.ok_or(AuthError::MissingKey)?;
        if caller.has_any(roles) {
            Ok(caller)
        } else {
            let mut needed: Vec<String> = roles.iter().map(Role::to_string).collect();
            needed.push(Role::Admin.to_string());
            Err(AuthError::Forbidden {
                name: caller.name.clone(),
                needed: needed.join(", "),
            })
        }
    }
}

impl ApiKey {
    fn caller(&self) -> Caller {
        Caller {
            name: self.name.clone(),
            limits: self.limits,
            roles: self.roles,
        }
    }
}

/// The hex SHA-256 of a key, as the API-keys file wants it.
pub fn key_digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.trim().as_bytes()))
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Access {
        let toml = format!(
            "[[key]]\nname = \"auth\"\nsha256 = \"{}\"\nroles = [\"revoke\"]\n\
             [[key]]\nname = \"ops\"\nsha256 = \"{}\"\nroles = [\"admin\"]\n",
            key_digest_hex("auth-secret"),
            key_digest_hex("ops-secret"),
        );
        Access::from_toml(&toml).unwrap()
    }

    #[test]
    fn a_configured_key_identifies_its_caller() {
        let caller = keys()
            .caller(Some(b"Bearer auth-secret"), None)
            .unwrap()
            .unwrap();
        assert_eq!(caller.name, "auth");
        assert!(caller.has_any(&[Role::Revoke]));
        assert!(!caller.has_any(&[Role::Read]));
    }

    #[test]
    fn each_of_many_keys_identifies_its_own_caller() {
        let text: String = (0..500)
            .map(|n| {
                let digest = key_digest_hex(&format!("secret-{n}"));
                format!(
                    "[[key]]\nname = \"caller-{n}\"\nsha256 = \"{digest}\"\nroles = [\"read\"]\n"
                )
            })
            .collect();
        let access = Access::from_toml(&text).unwrap();
        for n in [0, 1, 250, 499] {
            let header = format!("Bearer secret-{n}");
            let caller = access
                .caller(Some(header.as_bytes()), None)
                .unwrap()
                .unwrap();
            assert_eq!(caller.name, format!("caller-{n}"));
        }
        assert_eq!(
            access.caller(Some(b"Bearer secret-500"), None),
            Err(AuthError::UnknownKey)
        );
    }

    #[test]
    fn admin_holds_every_role() {
        let caller = keys()
            .caller(Some(b"Bearer ops-secret"), None)
            .unwrap()
            .unwrap();
        assert!(caller.has_any(&[Role::Subscribe]));
    }

    #[test]
    fn wrong_missing_and_malformed_keys_are_refused() {
        let access = keys();
        assert_eq!(
            access.caller(Some(b"Bearer nope"), None),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(
            access.caller(Some(b"auth-secret"), None),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(
            access.caller(Some(b"Bearer "), None),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(access.caller(None, None), Ok(None));
        assert_eq!(
            Access::require(None, &[Role::Read]),
            Err(AuthError::MissingKey)
        );
    }

    #[test]
    fn forbidden_names_the_missing_roles() {
        let access = keys();
        let caller = access.caller(Some(b"Bearer auth-secret"), None).unwrap();
        let error = Access::require(caller.as_ref(), &[Role::Read, Role::Subscribe]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "API key \"auth\" lacks the role this call needs (one of: read, subscribe, admin)"
        );
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        let digest = key_digest_hex("k");
        let cases = [
            ("", "no [[key]] entries"),
            (
                &format!("[[key]]\nname = \"a\"\nsha256 = \"{digest}\"\nroles = [\"root\"]\n") as &str,
                "unknown variant",
            ),
            ("[[key]]\nname = \"a\"\nsha256 = \"abc\"\nroles = [\"read\"]\n", "64 hex digits"),
            (
                &format!("[[key]]\nname = \"a\"\nsha256 = \"{digest}\"\nroles = []\n"),
                "has no roles",
            ),
            (
                &format!("[[key]]\nname = \"a\"\nsha256 = \"{digest}\"\nroles = [\"read\"]\npassword = \"x\"\n"),
                "unknown field",
            ),
        ];
        for (text, expected) in cases {
            let error = Access::from_toml(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn quotas_are_read_with_the_key_and_zero_is_refused() {
        let digest = key_digest_hex("q");
        let toml = format!(
            "[[key]]\nname = \"q\"\nsha256 = \"{digest}\"\nroles = [\"revoke\"]\n\
             max_revocations_per_second = 5\nmax_live_revocations = 10\nmax_streams = 2\n"
        );
        let caller = Access::from_toml(&toml)
            .unwrap()
            .caller(Some(b"Bearer q"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            caller.limits,
            Limits {
                max_revocations_per_second: Some(5),
                max_live_revocations: Some(10),
                max_streams: Some(2),
            }
        );
        let zero = toml.replace("max_streams = 2", "max_streams = 0");
        let error = Access::from_toml(&zero).err().unwrap();
        assert!(error.contains("quota of 0"), "{error}");
    }

    #[test]
    fn a_client_certificate_name_stands_in_for_a_key() {
        let toml = format!(
            "[[key]]\nname = \"edge\"\nclient_cert_cn = \"edge-1\"\nroles = [\"subscribe\"]\n\
             [[key]]\nname = \"auth\"\nsha256 = \"{}\"\nroles = [\"revoke\"]\n",
            key_digest_hex("auth-secret")
        );
        let access = Access::from_toml(&toml).unwrap();
        let edge = access.caller(None, Some("edge-1")).unwrap().unwrap();
        assert_eq!(edge.name, "edge");
        assert!(edge.has_any(&[Role::Subscribe]));
        assert_eq!(access.caller(None, Some("edge-2")), Ok(None));
        // A key, when sent, decides; the certificate does not add to it.
        let auth = access
            .caller(Some(b"Bearer auth-secret"), Some("edge-1"))
            .unwrap()
            .unwrap();
        assert_eq!(auth.name, "auth");
        let neither = "[[key]]\nname = \"x\"\nroles = [\"read\"]\n";
        let error = Access::from_toml(neither).err().unwrap();
        assert!(
            error.contains("neither sha256 nor client_cert_cn"),
            "{error}"
        );
    }

    #[test]
    fn open_access_makes_everyone_an_admin() {
        let caller = Access::Open.caller(None, None).unwrap().unwrap();
        assert!(caller.has_any(&[Role::Revoke]));
    }
}
