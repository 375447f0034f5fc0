//! The error type of petl-core: every message names the file, key or line at fault.

use std::path::PathBuf;

/// Result alias used across petl-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in petl-core because of its input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// File or folder.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A file exists but its content is not what it must be.
    #[error("{path}: {msg}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong, naming the key or line.
        msg: String,
    },
    /// An image could not be decoded.
    #[error("{path}: cannot decode image: {msg}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// Decoder message.
        msg: String,
    },
    /// Weights do not fit the model they are loaded into.
    #[error("{source_name}: {msg}")]
    Weights {
        /// The checkpoint file (or a description of the source).
        source_name: String,
        /// Missing, unexpected and mis-shaped keys, by name.
        msg: String,
    },
    /// A configuration that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A format error on `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), msg: msg.into() }
    }
}
