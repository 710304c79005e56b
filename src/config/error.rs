//! What goes wrong in a config, located (file, line, column, key), and what is only worth a
//! warning.

use std::fmt;

use super::yaml::Node;
use crate::replica::url::UrlError;

/// What went wrong, so callers can pick an exit code or a fallback (e.g. a missing default
/// config file) without matching on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The config file does not exist.
    NotFound,
    /// The config file could not be read.
    Io,
    /// The text is not valid YAML.
    Syntax,
    /// A key holds the wrong kind of value (a list where a string belongs, a bad duration...).
    Type,
    /// Values are well-formed but not acceptable (zero interval, duplicate database...).
    Invalid,
    /// A replica URL or replica description cannot be used.
    Replica,
}

/// A config problem with everything a user needs to fix it: file, line, column, key, message.
/// Messages never contain credential values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Category of the failure.
    pub kind: ConfigErrorKind,
    /// File name (or other source name) the config came from, if any.
    pub source_name: Option<String>,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<u64>,
    /// 1-based column of the offending key or value, when known.
    pub column: Option<u64>,
    /// Key path such as `dbs[0].replica.url`, when the error belongs to a key.
    pub key: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl ConfigError {
    /// An error without location, used for replica URLs given outside a config file.
    pub(super) fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            source_name: None,
            line: None,
            column: None,
            key: None,
            message: message.into(),
        }
    }

    /// Attaches a file, location and key unless the error already carries them.
    pub(super) fn located(mut self, source: &str, at: &Node, key: &str) -> Self {
        self.source_name.get_or_insert_with(|| source.to_string());
        if self.line.is_none() {
            self.line = Some(at.line);
            self.column = Some(at.column);
        }
        if self.key.is_none() && !key.is_empty() {
            self.key = Some(key.to_string());
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(source) = &self.source_name {
            match (self.line, self.column) {
                (Some(line), Some(column)) => write!(f, "{source}:{line}:{column}: ")?,
                (Some(line), None) => write!(f, "{source}:{line}: ")?,
                _ => write!(f, "{source}: ")?,
            }
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Something in the config that does not stop loading but that the user should see:
/// an unknown key, a key this build ignores, a duplicate key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// File name (or other source name) the config came from.
    pub source_name: String,
    /// 1-based line of the key.
    pub line: u64,
    /// 1-based column of the key.
    pub column: u64,
    /// Key path such as `dbs[0].replica.storage-class`.
    pub key: String,
    /// The whole message, naming the key (e.g. `unknown key "dbz" (ignored)`).
    pub message: String,
}

impl ConfigWarning {
    /// Logs the warning at WARN with its place as attributes, so a log reader can find the
    /// line: `msg="config warning" file=litestream.yml line=5 column=5 key=dbz
    /// warning="unknown key \"dbz\" (ignored)"`.
    pub fn log(&self) {
        log::warn!(
            file = self.source_name.as_str(),
            line = self.line,
            column = self.column,
            key = self.key.as_str(),
            warning = self.message.as_str();
            "config warning"
        );
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.source_name, self.line, self.column, self.message
        )
    }
}

pub(super) fn replica_error(message: impl Into<String>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::Replica, message)
}

impl From<UrlError> for ConfigError {
    fn from(e: UrlError) -> ConfigError {
        replica_error(e.message)
    }
}

pub(super) fn file_error(
    kind: ConfigErrorKind,
    source: &str,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError {
        source_name: Some(source.to_string()),
        ..ConfigError::new(kind, message)
    }
}

/// `"text"` with quotes and escapes, for messages.
pub(super) fn quote(s: &str) -> String {
    format!("{s:?}")
}
