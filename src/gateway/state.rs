//! The gateway's state on disk ([`GatewayConfig::state_dir`]): the last
//! filter view it held and its position, so a restarted gateway resumes
//! with deltas instead of taking a whole snapshot.
//!
//! # File format, version 1: `<state dir>/filter-state`
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `RVCDGWST` |
//! | 4 | format version, big-endian `u32`: 1 |
//! | 32 | SHA-256 of everything after it |
//! | 4 | big-endian `u32` N |
//! | N | the servers the view came from: the configured endpoints, sorted, one per line (UTF-8) |
//! | rest | the view as one whole `revocation.v1.Snapshot` (protobuf, part 0 of 1; [`FilterView::to_snapshot`]) |
//!
//! It is written beside its final name and renamed, so it is whole or
//! absent: at once for a new generation (a snapshot), and at most every
//! [`SAVE_INTERVAL`] while deltas change the view. It is
//! read once, at start: a file that is unreadable, of another format or
//! version, fails its checksum, or was written for other servers, is
//! ignored with a warning, and the gateway starts from a snapshot.
//!
//! # What a loaded view may do
//!
//! Nothing by itself: it never answers a check. Its cursor and generation
//! go in the first `Subscribe`, and it becomes the gateway's view only when
//! the server resumes from it, its first frame being a delta or a
//! heartbeat, never a snapshot (a server resumes only a generation of its
//! own whose history covers the cursor, and sends every change since). A
//! snapshot replaces it. So a stale, foreign or tampered file can cost a
//! snapshot, never a revocation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use sha2::{Digest as _, Sha256};

use super::view::FilterView;
use crate::pb;

/// How often the view is saved while deltas change it.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(2);
/// The file's name in the state directory.
const FILE_NAME: &str = "filter-state";
const MAGIC: &[u8; 8] = b"RVCDGWST";
const VERSION: u32 = 1;
/// Magic, version, checksum.
const HEADER_BYTES: usize = 8 + 4 + 32;

/// Why a state file was not used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// It is not a state file of this format and version, or is damaged.
    #[error("not a readable filter state ({0})")]
    Corrupt(String),
    /// It was written for other servers.
    #[error("written for other servers ({0})")]
    Foreign(String),
}

/// Where the state of a gateway following `endpoints` lives.
#[derive(Debug, Clone)]
pub(super) struct StateFile {
    path: PathBuf,
    /// The endpoints line of the format.
    servers: String,
}

impl StateFile {
    /// The state file in `dir` of a gateway following `endpoints`.
    pub(super) fn new(dir: &Path, endpoints: &[String]) -> Self {
        let mut servers = endpoints.to_vec();
        servers.sort();
        StateFile {
            path: dir.join(FILE_NAME),
            servers: servers.join("\n"),
        }
    }

    /// Writes `view`, whole or not at all.
    ///
    /// # Errors
    /// The directory or the file cannot be written.
    pub(super) fn save(&self, view: &FilterView) -> Result<(), StateError> {
        let snapshot = view.to_snapshot().encode_to_vec();
        let servers = self.servers.as_bytes();
        let mut body = Vec::with_capacity(4 + servers.len() + snapshot.len());
        body.extend_from_slice(&(servers.len() as u32).to_be_bytes());
        body.extend_from_slice(servers);
        body.extend_from_slice(&snapshot);
        let mut file = Vec::with_capacity(HEADER_BYTES + body.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&VERSION.to_be_bytes());
        file.extend_from_slice(&Sha256::digest(&body));
        file.extend_from_slice(&body);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = self
            .path
            .with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&temporary, &file)?;
        std::fs::rename(&temporary, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })?;
        Ok(())
    }

    /// The view saved, if there is a usable one.
    ///
    /// # Errors
    /// A [`StateError`] saying why the file cannot be used; a missing file
    /// is `Ok(None)`.
    pub(super) fn load(&self) -> Result<Option<FilterView>, StateError> {
        let file = match std::fs::read(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let corrupt = |why: &str| StateError::Corrupt(why.to_owned());
        if file.len() < HEADER_BYTES + 4 || &file[..8] != MAGIC {
            return Err(corrupt("no revocd filter state header"));
        }
        let version = u32::from_be_bytes(file[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(StateError::Corrupt(format!(
                "format version {version}; this gateway reads {VERSION}"
            )));
        }
        let body = &file[HEADER_BYTES..];
        if Sha256::digest(body).as_slice() != &file[12..HEADER_BYTES] {
            return Err(corrupt("checksum mismatch"));
        }
        let servers_len = u32::from_be_bytes(body[..4].try_into().expect("4 bytes")) as usize;
        let servers = body
            .get(4..4 + servers_len)
            .ok_or_else(|| corrupt("truncated server list"))?;
        if servers != self.servers.as_bytes() {
            let saved = String::from_utf8_lossy(servers).replace('\n', ", ");
            return Err(StateError::Foreign(saved));
        }
        let snapshot = pb::Snapshot::decode(&body[4 + servers_len..])
            .map_err(|e| StateError::Corrupt(e.to_string()))?;
        FilterView::from_whole_snapshot(snapshot)
            .map(Some)
            .map_err(|e| StateError::Corrupt(e.to_string()))
    }

    /// Where the file is, for messages.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests;
