//! The environment a config is read in: `$VAR` expansion (Go's `os.Expand`), the default
//! config path, `~`, the working directory and Litestream's path rules.

use std::path::{Path, PathBuf};

use super::error::{file_error, ConfigError, ConfigErrorKind};
use super::{CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, META_DIR_SUFFIX};
use crate::replica::url::clean_path;

/// The config path to use when `-config` is not given: `$LITESTREAM_CONFIG` if set and not
/// empty, else `/etc/litestream.yml` (main.go `DefaultConfigPath`).
pub fn default_config_path(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    env(CONFIG_PATH_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH), PathBuf::from)
}

/// The process environment as Litestream's expansion sees it: `$PID` is this process's id
/// (main.go `ParseConfig`), everything else comes from `std::env`.
pub fn process_env(name: &str) -> Option<String> {
    if name == "PID" {
        return Some(std::process::id().to_string());
    }
    std::env::var(name).ok()
}

/// Expands `$VAR` and `${VAR}` exactly like Go's `os.Expand`, which Litestream applies to the
/// raw config text: undefined variables become empty; `$` followed by a shell special character
/// (`$$`, `$1`, `$@`, `$-`, ...) expands that one-character variable; `${}` and an unclosed `${`
/// are dropped; `$` before anything else (or at the end) stays as is. `${A:-x}` is not shell
/// syntax here: it looks up a variable literally named `A:-x`.
pub fn expand_env(text: &str, env: impl Fn(&str) -> Option<String>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0; // bytes[..copied] are already in `out`
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&text[copied..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            match name {
                Some(name) => out.push_str(&env(name).unwrap_or_default()),
                None if width == 0 => out.push('$'),
                None => {} // bad syntax: the characters are eaten, as in Go
            }
            j += width;
            copied = j + 1;
        }
        j += 1;
    }
    out.push_str(&text[copied.min(text.len())..]);
    out
}

/// Litestream's `StripSQLitePrefix`: `sqlite://` and `sqlite3://` are removed from db paths.
pub(super) fn strip_sqlite_prefix(s: &str) -> &str {
    s.strip_prefix("sqlite3://")
        .or_else(|| s.strip_prefix("sqlite://"))
        .unwrap_or(s)
}

/// `~` and `~/x` become `$HOME` and `$HOME/x`; other `~` forms are left alone, as in Litestream.
pub(super) fn expand_user_path(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, String> {
    if s != "~" && !s.starts_with("~/") {
        return Ok(PathBuf::from(s));
    }
    let home = env("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("cannot expand path {s}, no home directory available"))?;
    Ok(Path::new(&home).join(s.trim_start_matches('~').trim_start_matches('/')))
}

/// `filepath.Abs`: join with `cwd` when relative, then clean.
pub(super) fn absolutize(p: &Path, cwd: &Path) -> PathBuf {
    if p.is_absolute() {
        clean_path(p)
    } else {
        clean_path(&cwd.join(p))
    }
}

/// Default local state directory: `.<name>-litestream` beside the database (db.go `NewDB`).
pub(super) fn default_meta_path(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let dir = db.parent().unwrap_or_else(|| Path::new("/"));
    dir.join(format!(".{name}{META_DIR_SUFFIX}"))
}

/// The working directory, for resolving relative paths.
pub(super) fn current_dir(source: &str) -> Result<PathBuf, ConfigError> {
    std::env::current_dir().map_err(|e| {
        file_error(
            ConfigErrorKind::Io,
            source,
            format!("cannot read the working directory: {e}"),
        )
    })
}

/// Go's shell-name rule for `os.Expand`: returns (name, bytes consumed after `$`).
/// `(None, 0)` leaves the `$`; `(None, n > 0)` eats bad syntax.
pub(super) fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    let special = |c: u8| b"*#$@!?-0123456789".contains(&c);
    if b[0] == b'{' {
        if b.len() > 2 && special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match s[1..].find('}') {
            Some(0) => (None, 2),
            Some(i) => (Some(&s[1..=i]), i + 2),
            None => (None, 1),
        };
    }
    if special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{env_of, no_env};
    use super::*;

    #[test]
    fn default_config_path_follows_litestream_config_env() {
        assert_eq!(
            default_config_path(no_env),
            PathBuf::from("/etc/litestream.yml")
        );
        assert_eq!(
            default_config_path(env_of(&[("LITESTREAM_CONFIG", "/srv/ls.yml")])),
            PathBuf::from("/srv/ls.yml")
        );
        assert_eq!(
            default_config_path(env_of(&[("LITESTREAM_CONFIG", "")])),
            PathBuf::from("/etc/litestream.yml")
        );
    }

    #[test]
    fn expand_env_follows_go_os_expand() {
        let env = env_of(&[("FOO", "foo"), ("A_1", "x")]);
        assert_eq!(expand_env("$FOO ${FOO} $A_1", &env), "foo foo x");
        assert_eq!(expand_env("${FOO}bar $FOObar", &env), "foobar ");
        assert_eq!(expand_env("$NOPE|${NOPE}|", &env), "||");
        assert_eq!(expand_env("a$$b $1 $@ $-x", &env), "ab   x");
        assert_eq!(expand_env("${}x ${unclosed", &env), "x unclosed");
        assert_eq!(expand_env("${BAR:-dflt}", &env), "");
        assert_eq!(
            expand_env("cost: 5$ and $ alone, end$", &env),
            "cost: 5$ and $ alone, end$"
        );
        assert_eq!(expand_env("p/$/q $.x", &env), "p/$/q $.x");
        assert_eq!(expand_env("no dollars", &env), "no dollars");
        assert_eq!(expand_env("ünïcode $FOO ✓", &env), "ünïcode foo ✓");
    }

    #[test]
    fn process_env_knows_pid() {
        assert_eq!(process_env("PID"), Some(std::process::id().to_string()));
    }
}
