//! The YAML tree with line numbers (serde-saphyr `Spanned`), and the typed walk over it that
//! every section parser uses: [`Ctx`] (source, environment, warnings), [`Field`] (one key's
//! value, read as a string, bool, integer or duration) and [`MapView`] (a mapping whose unread
//! keys become warnings).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::env::{absolutize, expand_user_path};
use super::error::{quote, ConfigError, ConfigErrorKind, ConfigWarning};
use crate::duration;

/// Key names whose values are credentials: never echoed in messages.
pub(super) const SECRET_KEYS: &[&str] = &[
    "access-key-id",
    "secret-access-key",
    "password",
    "account-key",
    "sas-token",
    "sse-customer-key",
    "webdav-password",
    "token",
    "seed",
    "nkey",
    "jwt",
    "client-key",
];

/// A YAML value as serde-saphyr infers it, each node with its source location.
#[derive(Debug)]
pub(super) enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float,
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

/// Serde visitor that keeps whatever YAML holds; types are checked later, per key.
pub(super) struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        // Only values beyond i128 fail here; they are far outside any config range anyway.
        Ok(i128::try_from(v).map_or(Raw::Float, Raw::Int))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Raw, E> {
        Ok(Raw::Float)
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut pairs = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Raw>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            pairs.push((key, value));
        }
        Ok(Raw::Map(pairs))
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// A located YAML node. `text` is the source spelling of scalars, so a string key that YAML
/// resolved to a number or boolean (`bucket: 123`, `path: yes`) keeps its spelling, as yaml.v2
/// does for string fields.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) kind: Kind,
    pub(super) line: u64,
    pub(super) column: u64,
    pub(super) text: String,
}

#[derive(Debug)]
pub(super) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    /// A float; only its spelling (`Node::text`) is ever used.
    Float,
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Converts serde-saphyr's spanned value, slicing scalar spellings out of `src`.
    pub(super) fn from_spanned(spanned: Spanned<Raw>, src: &str) -> Node {
        let at = spanned.referenced;
        let span = spanned.defined.span(); // for aliases: the anchored scalar's own spelling
        let text = match (span.byte_offset(), span.byte_len()) {
            (Some(off), Some(len)) => usize::try_from(off)
                .ok()
                .zip(usize::try_from(off + len).ok())
                .and_then(|(a, b)| src.get(a..b))
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        };
        let kind = match spanned.value {
            Raw::Null => Kind::Null,
            Raw::Bool(b) => Kind::Bool(b),
            Raw::Int(i) => Kind::Int(i),
            Raw::Float => Kind::Float,
            Raw::Str(s) => Kind::Str(s),
            Raw::Seq(items) => Kind::Seq(
                items
                    .into_iter()
                    .map(|n| Node::from_spanned(n, src))
                    .collect(),
            ),
            Raw::Map(pairs) => Kind::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (Node::from_spanned(k, src), Node::from_spanned(v, src)))
                    .collect(),
            ),
        };
        Node {
            kind,
            line: at.line(),
            column: at.column(),
            text,
        }
    }

    /// The key as a string: its text for strings, its spelling otherwise.
    pub(super) fn key_name(&self) -> String {
        match &self.kind {
            Kind::Str(s) => s.clone(),
            _ => self.text.clone(),
        }
    }

    /// "a sequence", `string "abc"`, ... for messages; values of secret keys are not shown.
    pub(super) fn describe(&self, secret: bool) -> String {
        let kind = match &self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a sequence",
            Kind::Map(_) => "a mapping",
        };
        match &self.kind {
            Kind::Str(s) if !secret => format!("string {}", quote(s)),
            Kind::Bool(_) | Kind::Int(_) | Kind::Float if !secret => {
                format!("{kind} ({})", self.text)
            }
            _ => kind.to_string(),
        }
    }
}

/// Parses YAML text into a located tree. YAML 1.1 octal (`0600`) is honoured, as in yaml.v2;
/// duplicate keys reach us so we can warn about them.
pub(super) fn parse_tree(text: &str, source: &str) -> Result<Node, ConfigError> {
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(raw) => Ok(Node::from_spanned(raw, text)),
        Err(e) => Err(syntax_error(&e, source)),
    }
}

/// A YAML syntax error as `file:line:col: yaml: <message>`, without the source snippet (which
/// could show a secret).
pub(super) fn syntax_error(e: &serde_saphyr::Error, source: &str) -> ConfigError {
    let mut message = e.without_snippet().to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    let location = e.location();
    ConfigError {
        kind: ConfigErrorKind::Syntax,
        source_name: Some(source.to_string()),
        line: location.map(|l| l.line()),
        column: location.map(|l| l.column()),
        key: None,
        message: format!("yaml: {message}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Typed walk over the tree
// ---------------------------------------------------------------------------------------------

/// State of one parse: where messages point, how to look up `HOME`, collected warnings.
pub(super) struct Ctx<'a> {
    pub(super) source: &'a str,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) cwd: PathBuf,
    pub(super) warnings: Vec<ConfigWarning>,
}

impl Ctx<'_> {
    /// An error located at `at`, belonging to `key`.
    pub(super) fn error(
        &self,
        kind: ConfigErrorKind,
        at: &Node,
        key: &str,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(kind, msg).located(self.source, at, key)
    }

    /// Records a warning located at `at`.
    pub(super) fn warn(&mut self, at: &Node, key: &str, message: String) {
        self.warnings.push(ConfigWarning {
            source_name: self.source.to_string(),
            line: at.line,
            column: at.column,
            key: key.to_string(),
            message,
        });
    }

    /// `~` expansion and absolutizing against the working directory, as Litestream's `expand`.
    pub(super) fn resolve_path(&self, text: &str) -> Result<PathBuf, String> {
        Ok(absolutize(&expand_user_path(text, self.env)?, &self.cwd))
    }
}

/// A key and its value, with the dotted path used in messages.
pub(super) struct Field<'n> {
    pub(super) path: String,
    pub(super) key: &'n Node,
    pub(super) value: &'n Node,
}

impl<'n> Field<'n> {
    /// An error about this key, pointing at the key.
    pub(super) fn error(
        &self,
        ctx: &Ctx,
        kind: ConfigErrorKind,
        msg: impl Into<String>,
    ) -> ConfigError {
        ctx.error(kind, self.key, &self.path, msg)
    }

    /// "expected X, found Y", never showing a secret value.
    pub(super) fn type_error(&self, ctx: &Ctx, expected: &str) -> ConfigError {
        let found = self.value.describe(is_secret_key(&self.path));
        self.error(
            ctx,
            ConfigErrorKind::Type,
            format!("expected {expected}, found {found}"),
        )
    }

    /// A string; `None` for null or empty (Litestream treats "" as unset). Numbers and
    /// booleans keep their spelling, as yaml.v2 does for string fields.
    pub(super) fn string(&self, ctx: &Ctx) -> Result<Option<String>, ConfigError> {
        match &self.value.kind {
            Kind::Null => Ok(None),
            Kind::Str(s) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
            Kind::Bool(_) | Kind::Int(_) | Kind::Float => Ok(Some(self.value.text.clone())),
            _ => Err(self.type_error(ctx, "a string")),
        }
    }

    /// A boolean (`true`/`false`, or YAML 1.1 `yes`/`no`/`on`/`off`); `None` for null.
    pub(super) fn bool(&self, ctx: &Ctx) -> Result<Option<bool>, ConfigError> {
        match self.value.kind {
            Kind::Null => Ok(None),
            Kind::Bool(b) => Ok(Some(b)),
            _ => Err(self.type_error(ctx, "true or false")),
        }
    }

    /// A whole number in `T`'s range; `None` for null.
    pub(super) fn int<T: TryFrom<i128>>(&self, ctx: &Ctx) -> Result<Option<T>, ConfigError> {
        match self.value.kind {
            Kind::Null => Ok(None),
            Kind::Int(i) => T::try_from(i).map(Some).map_err(|_| {
                self.error(
                    ctx,
                    ConfigErrorKind::Invalid,
                    format!("{i} is out of range"),
                )
            }),
            _ => Err(self.type_error(ctx, "an integer")),
        }
    }

    /// A Go-syntax duration as signed nanoseconds; `None` for null. A bare `0` is accepted;
    /// other bare numbers need a unit (Litestream would read them as nanoseconds).
    pub(super) fn duration(&self, ctx: &Ctx) -> Result<Option<i64>, ConfigError> {
        match &self.value.kind {
            Kind::Null => Ok(None),
            Kind::Int(0) => Ok(Some(0)),
            Kind::Str(s) => duration::parse_nanos(s).map(Some).ok_or_else(|| {
                self.error(
                    ctx,
                    ConfigErrorKind::Type,
                    format!("invalid duration {}", quote(s)),
                )
            }),
            Kind::Int(i) => Err(self.error(
                ctx,
                ConfigErrorKind::Type,
                format!("invalid duration {i}: a unit is required, e.g. \"{i}s\""),
            )),
            _ => Err(self.type_error(ctx, "a duration such as \"1s\" or \"5m\"")),
        }
    }

    /// A duration that must be greater than zero.
    pub(super) fn positive_duration(&self, ctx: &Ctx) -> Result<Option<Duration>, ConfigError> {
        self.bounded_duration(ctx, false)
    }

    /// A duration that may be zero (meaning "off") but not negative.
    pub(super) fn non_negative_duration(&self, ctx: &Ctx) -> Result<Option<Duration>, ConfigError> {
        self.bounded_duration(ctx, true)
    }

    pub(super) fn bounded_duration(
        &self,
        ctx: &Ctx,
        zero_ok: bool,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(nanos) = self.duration(ctx)? else {
            return Ok(None);
        };
        if nanos > 0 || (zero_ok && nanos == 0) {
            return Ok(Some(Duration::from_nanos(nanos.unsigned_abs())));
        }
        let rule = if zero_ok {
            "must be >= 0"
        } else {
            "must be greater than 0"
        };
        Err(self.error(
            ctx,
            ConfigErrorKind::Invalid,
            format!("{rule} (got {})", duration::format_nanos(nanos)),
        ))
    }

    /// The items of a sequence; empty for null.
    pub(super) fn seq(&self, ctx: &Ctx, expected: &str) -> Result<&'n [Node], ConfigError> {
        match &self.value.kind {
            Kind::Null => Ok(&[]),
            Kind::Seq(items) => Ok(items),
            _ => Err(self.type_error(ctx, expected)),
        }
    }

    /// The value as a mapping to read keys from.
    pub(super) fn map(&self, ctx: &mut Ctx) -> Result<MapView<'n>, ConfigError> {
        MapView::new(ctx, self.value, self.key, &self.path)
    }
}

/// The entries of one YAML mapping; keys are taken by name, and whatever is left at
/// [`MapView::finish`] becomes a warning.
pub(super) struct MapView<'n> {
    pub(super) path: String,
    pub(super) entries: Vec<(String, &'n Node, &'n Node, bool)>,
}

impl<'n> MapView<'n> {
    /// Views `node` (a mapping, or null for an empty one) whose key path is `path`; a wrong
    /// type is reported at `at` (the key, or the node itself for list items and the root).
    /// Repeated keys warn; the last one wins, as in yaml.v2.
    pub(super) fn new(
        ctx: &mut Ctx,
        node: &'n Node,
        at: &Node,
        path: &str,
    ) -> Result<MapView<'n>, ConfigError> {
        let pairs: &'n [(Node, Node)] = match &node.kind {
            Kind::Map(pairs) => pairs,
            Kind::Null => &[],
            _ => {
                let expected = if path.is_empty() {
                    "a mapping of keys at the top level"
                } else {
                    "a mapping of keys"
                };
                let found = node.describe(false);
                let msg = format!("expected {expected}, found {found}");
                return Err(ctx.error(ConfigErrorKind::Type, at, path, msg));
            }
        };
        let mut entries: Vec<(String, &'n Node, &'n Node, bool)> = Vec::new();
        for (key, value) in pairs {
            let name = key.key_name();
            if let Some(first) = entries.iter().find(|e| e.0 == name) {
                let msg = format!(
                    "duplicate key {} (first set on line {}); the last value wins",
                    quote(&child_path(path, &name)),
                    first.1.line
                );
                ctx.warn(key, &child_path(path, &name), msg);
            }
            entries.push((name, key, value, false));
        }
        Ok(MapView {
            path: path.to_string(),
            entries,
        })
    }

    /// Takes key `name` (its last occurrence), marking it as read.
    pub(super) fn take(&mut self, name: &str) -> Option<Field<'n>> {
        let mut found = None;
        for entry in self.entries.iter_mut().filter(|e| e.0 == name) {
            entry.3 = true;
            found = Some((entry.1, entry.2));
        }
        found.map(|(key, value)| Field {
            path: child_path(&self.path, name),
            key,
            value,
        })
    }

    /// Whether key `name` is present (without taking it).
    pub(super) fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.0 == name)
    }

    /// Warns about every key not taken: "not supported yet" for keys in `not_yet`,
    /// "unknown" for the rest.
    pub(super) fn finish(self, ctx: &mut Ctx, not_yet: &[&[&str]]) {
        for (name, key, _, used) in self.entries {
            if used {
                continue;
            }
            let path = child_path(&self.path, &name);
            let known = not_yet.iter().any(|list| list.contains(&name.as_str()));
            let message = if known {
                format!("key {} is not supported yet (ignored)", quote(&path))
            } else {
                format!("unknown key {} (ignored)", quote(&path))
            };
            ctx.warn(key, &path, message);
        }
    }
}

/// `a.b` for nested keys, `b` at the top level.
pub(super) fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// Whether the last segment of a key path names a credential.
pub(super) fn is_secret_key(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    SECRET_KEYS.contains(&last)
}
