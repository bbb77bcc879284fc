//! Errors of files named by flags or settings: key files, certificates,
//! API-key tables, the digest key. One type for all of them, so each
//! reader reports the file by name the same way, whichever part of the
//! crate (tokens, TLS, API keys, server start-up) reads it.
//!
//! A leaf module: it depends on nothing else in the crate, so the token
//! verifier can use it without pulling in the server's configuration.

use std::path::Path;

/// A file named by a flag or setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's contents are not usable.
    #[error("{path}: {detail}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, for a person to fix.
        detail: String,
    },
}

impl FileError {
    /// A read failure of `path`.
    pub fn read(path: &Path, source: std::io::Error) -> Self {
        FileError::Read {
            path: path.display().to_string(),
            source,
        }
    }

    /// Unusable contents of `path`.
    pub fn invalid(path: &Path, detail: impl Into<String>) -> Self {
        FileError::Invalid {
            path: path.display().to_string(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let read = FileError::read(Path::new("/etc/revocd/keys.toml"), missing);
        assert!(read
            .to_string()
            .starts_with("reading /etc/revocd/keys.toml: "));
        let invalid = FileError::invalid(Path::new("k.pem"), "no PEM block");
        assert_eq!(invalid.to_string(), "k.pem: no PEM block");
    }
}
