//! `node.conf` handling: a lossless INI layer ([`IniDocument`]), a typed and
//! validated model ([`NodeConfig`]) and crash-safe file operations.
//!
//! The INI layer keeps every byte of the original text so that editing one
//! value (`om node set`) never reformats or drops the operator's comments.

mod file;
mod ini;
pub mod keywords;
mod model;
mod param;
pub mod paths;

use std::fmt;
use std::path::PathBuf;

pub use file::{
    create_default, generate_secret, get_param, load, load_or_create, set_param,
    try_generate_secret, update, write_atomic,
};
pub use ini::IniDocument;
pub use keywords::{Keyword, Unknown, ValueError};
pub use model::{
    BackendChoice, ClusterConfig, DEFAULT_DEQUEUE_TIMEOUT_MS, HbConfig, ListenerConfig, LogFormat,
    NodeConfig, PeerConfig, SplitAction, parse_bool, parse_duration_ms, short_hostname,
};
pub use param::Param;
pub use paths::Paths;

/// Every failure of this module. Display texts start with `path:line:` when a
/// location is known so that operators can jump straight to the culprit.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}:{line}: syntax error: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("{}:{line}: {key}: invalid value {value:?}: {message}", path.display())]
    Value {
        path: PathBuf,
        line: usize,
        /// `section.key` form, e.g. `listener.port`.
        key: String,
        value: String,
        message: String,
    },

    #[error("{}: {key}: required value is missing", path.display())]
    Missing { path: PathBuf, key: String },

    /// A keyword or section not in the registry, where a file has it.
    #[error("{}:{line}: {unknown}", path.display())]
    Unknown {
        path: PathBuf,
        line: usize,
        unknown: Unknown,
    },

    /// A keyword or section not in the registry, as a command line names it.
    #[error("{unknown}")]
    UnknownParam { unknown: Unknown },

    #[error("invalid parameter {param:?}: {message}")]
    Param { param: String, message: String },

    /// Refused edit of an [`IniDocument`] (text that would not survive a
    /// render/parse round trip, e.g. a newline inside a value).
    #[error("cannot set {section}.{key}: {message}")]
    Edit {
        section: String,
        key: String,
        message: String,
    },

    #[error("cannot generate a secret: the system random generator failed")]
    Random,
}

impl ConfigError {
    /// True when the error is a read/write of a file that does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ConfigError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// True when creating a file failed because it already exists.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ConfigError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An error and its causes, `error: cause: cause`, for the places that show an error as one
/// line without anyhow (log lines, error answers).
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_says_its_cause_once() {
        let e = ConfigError::io(
            std::path::Path::new("/x/node.conf"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(e.to_string(), "/x/node.conf");
        assert_eq!(ErrorChain(&e).to_string(), "/x/node.conf: entity not found");
    }
}
