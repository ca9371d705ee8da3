//! The config file of `mutual run --config FILE` (docs/config.md): several `[[listener]]` blocks
//! (serve and connect) in one process. This module turns the text into a checked [`RunConfig`]
//! (one [`ListenerSpec`] per block, each holding the same `ServeConfig`/`ConnectConfig` the CLI
//! flags build) and nothing else: no sockets, no runtime. The only I/O is reading the files the
//! listeners name (existence, and the policy file's rules), so that `mutual config check` and a
//! reload reject a broken edit before anything changes.
//!
//! Every problem is collected, not just the first: a syntax error (with recovery, so several
//! syntax errors are listed), unknown keys, bad values, then the semantic checks (duplicate
//! names or addresses, missing files, bad policy patterns, a serve listener that allows no one).
//! Each comes with the line and column of the key or value concerned.
//!
//! The folder holds what runs listeners from configuration: this parser, [`supervise`]
//! (many listeners from one file, reloaded block by block) and [`reload`] (the file watch and
//! SIGHUP that trigger a reload, for one listener or a whole file).

pub mod options;
pub mod reload;
pub mod supervise;

pub use options::{ConnectOpts, ListenerOpts, ServeOpts};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use mutual_policy::Policy;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::connect::ConnectConfig;
use crate::serve::ServeConfig;

/// The defaults of the listener options, for the flags (clap's `default_value`) and the
/// config keys alike: written once, in the duration grammar.
pub mod defaults {
    pub const HANDSHAKE_TIMEOUT: &str = "10s";
    pub const IDLE_TIMEOUT: &str = "5m";
    pub const CONNECT_TIMEOUT: &str = "10s";
    pub const DRAIN_TIMEOUT: &str = "30s";

    /// A default above as a `Duration`.
    pub fn duration(d: &str) -> std::time::Duration {
        mutual_policy::human::parse_duration(d).unwrap_or_default()
    }
}

/// One problem in a config file, at a 1-based line and column (characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Why a config file could not be used. `Invalid` carries every problem found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(path, diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

/// `FILE:LINE:COL: message`, one per line (the format compilers use, so editors can jump).
pub fn render(path: &Path, diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("{}:{}:{}: {}", path.display(), d.line, d.col, d.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole file, checked: process-wide settings and the listeners.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// `/metrics`, `/healthz`, `/readyz` address.
    pub metrics: Option<String>,
    /// `-` (stdout) or a path (resolved against the config file's directory).
    pub audit_log: Option<String>,
    pub threads: Option<usize>,
    /// `human` or `json`.
    pub log_format: String,
    pub listeners: Vec<ListenerSpec>,
}

/// One `[[listener]]` block, ready to start.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    pub name: String,
    /// The address to bind, as written (`HOST:PORT`).
    pub listen: String,
    /// Line of the block's `[[listener]]` header (for log lines about it).
    pub line: usize,
    pub kind: ListenerKind,
    /// `ca_url`/`token_file`/`root_sha256`: enroll (when the files are not usable yet) and
    /// renew this listener's certificate from the online CA, as `serve --ca-url` does.
    pub enroll: Option<Enrollment>,
}

/// The enrollment keys of a listener (the `--ca-url`/`--token`/`--root-sha256` flags of
/// `serve` and `connect`; a config file names a token *file*, never the token itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enrollment {
    /// The online CA, `https://HOST[:PORT]`; several (a string with commas, or an array) for
    /// failover, in order.
    pub ca_url: Vec<String>,
    pub token_file: Option<PathBuf>,
    pub root_sha256: Option<String>,
}

#[derive(Clone, Debug)]
pub enum ListenerKind {
    Serve(Box<ServeConfig>),
    Connect(Box<ConnectConfig>),
}

impl ListenerSpec {
    /// A text that changes exactly when the block's meaning changes: a reload keeps a listener
    /// whose fingerprint is the same untouched (its files are watched on their own).
    pub fn fingerprint(&self) -> String {
        format!("{}|{:?}|{:?}", self.listen, self.kind, self.enroll)
    }

    /// The certificate, key and CA bundle the listener loads (and enrollment writes).
    pub fn files(&self) -> (&Path, &Path, &Path) {
        match &self.kind {
            ListenerKind::Serve(s) => (&s.tls.cert, &s.tls.key, &s.tls.ca),
            ListenerKind::Connect(c) => (&c.tls.cert, &c.tls.key, &c.tls.ca),
        }
    }

    /// The `role` label of the listener's own certificate in the expiry gauge.
    pub fn cert_role(&self) -> &'static str {
        match self.kind {
            ListenerKind::Serve(_) => "server",
            ListenerKind::Connect(_) => "client",
        }
    }

    pub fn kind_label(&self) -> &'static str {
        match self.kind {
            ListenerKind::Serve(_) => "serve",
            ListenerKind::Connect(_) => "connect",
        }
    }
}

/// Reads and checks a config file; relative paths in it are taken from its directory.
pub fn load(path: &Path) -> Result<RunConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parse(&text, &base).map_err(|diagnostics| ConfigError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    })
}

const GLOBAL_KEYS: &[&str] = &["metrics", "audit_log", "threads", "log_format", "listener"];

/// The field names serde's derive lists for a struct: the keys a `[[listener]]` block takes
/// are [`RawListener`]'s and [`ListenerOpts`]'s fields, written once.
fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names only")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Stop
        }
    }
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// Keys that only mean something on a serve listener: [`ServeOpts`]'s and the
/// `[[listener.allow]]` tables.
fn serve_only(key: &str) -> bool {
    key == "allow" || ServeOpts::keys().contains(&key)
}

/// Keys that only mean something on a connect listener: [`ConnectOpts`]'s.
fn connect_only(key: &str) -> bool {
    ConnectOpts::keys().contains(&key)
}

const RULE_KEYS: &[&str] = &[
    "spiffe",
    "dns",
    "ip",
    "cn",
    "ou",
    "allow_any",
    "methods",
    "paths",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    metrics: Option<Spanned<String>>,
    audit_log: Option<Spanned<String>>,
    threads: Option<Spanned<i64>>,
    log_format: Option<Spanned<String>>,
}

type S = Spanned<String>;

/// The keys of a block that are not options (those are [`ListenerOpts`], [`ServeOpts`] and
/// [`ConnectOpts`], shared with the flags): what only a file has.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<S>,
    kind: Option<S>,
    allow: Option<Vec<Spanned<toml::Table>>>,
    #[serde(default, deserialize_with = "one_or_many")]
    ca_url: Option<Vec<String>>,
    token_file: Option<S>,
    root_sha256: Option<S>,
}

/// A string (comma-separated values allowed) or an array of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or an array of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(v.split(',').map(|s| s.trim().to_string()).collect())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = a.next_element::<String>()? {
                out.extend(s.split(',').map(|s| s.trim().to_string()));
            }
            Ok(out)
        }
    }
    d.deserialize_any(V).map(Some)
}

/// Collects diagnostics against the source text (offsets -> line:col).
struct Sink<'a> {
    text: &'a str,
    out: Vec<(usize, Diagnostic)>,
}

impl Sink<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let start = span.start.min(self.text.len());
        let before = self.text.get(..start).unwrap_or("");
        let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before.get(line_start..).map_or(0, |t| t.chars().count()) + 1;
        self.out.push((
            start,
            Diagnostic {
                line,
                col,
                message: message.into(),
            },
        ));
    }

    fn de(&mut self, e: &toml::de::Error, fallback: Range<usize>) {
        let msg = e.message().trim().replace('\n', " ");
        self.at(e.span().unwrap_or(fallback), msg);
    }
}

/// Parses and checks a config file's text; `base` is the directory relative paths start from.
/// Returns every problem found, in file order.
pub fn parse(text: &str, base: &Path) -> Result<RunConfig, Vec<Diagnostic>> {
    let mut sink = Sink {
        text,
        out: Vec::new(),
    };
    let cfg = parse_into(text, base, &mut sink);
    if sink.out.is_empty() {
        if let Some(cfg) = cfg {
            return Ok(cfg);
        }
    }
    let mut out = sink.out;
    out.sort_by_key(|(offset, _)| *offset);
    out.dedup_by(|a, b| a.1 == b.1);
    Err(out.into_iter().map(|(_, d)| d).collect())
}

/// Reports keys of `table` not in `known` and removes them, so serde's `deny_unknown_fields`
/// does not stop at the first one and every unknown key is listed.
fn strip_unknown(table: &mut DeTable<'_>, known: &[&str], what: &str, sink: &mut Sink<'_>) {
    let mut unknown = Vec::new();
    for (k, _) in table.iter() {
        if !known.contains(&k.get_ref().as_ref()) {
            unknown.push((k.get_ref().to_string(), k.span()));
        }
    }
    for (k, span) in unknown {
        let hint = closest(&k, known)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        sink.at(span, format!("unknown key `{k}` in {what}{hint}"));
        table.remove(k.as_str());
    }
}

/// The known key with the smallest edit distance, when it is close (typo help).
fn closest<'k>(k: &str, known: &[&'k str]) -> Option<&'k str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    known
        .iter()
        .map(|c| (dist(k, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c)
}

fn parse_into(text: &str, base: &Path, sink: &mut Sink<'_>) -> Option<RunConfig> {
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in &errors {
            sink.de(e, 0..0);
        }
        return None;
    }
    let root_span = root.span();
    let mut root = root.into_inner();
    strip_unknown(&mut root, GLOBAL_KEYS, "the top level", sink);
    let listeners_value = root.remove("listener");

    let global = match RawGlobal::deserialize(ValueDeserializer::from(Spanned::new(
        root_span.clone(),
        DeValue::Table(root),
    ))) {
        Ok(g) => Some(g),
        Err(e) => {
            sink.de(&e, root_span.clone());
            None
        }
    };

    let mut raw_listeners = Vec::new();
    match listeners_value {
        None => sink.at(
            root_span.start..root_span.start,
            "no [[listener]] block: nothing to run",
        ),
        Some(v) => {
            let span = v.span();
            match v.into_inner() {
                DeValue::Array(items) => {
                    for item in items {
                        let ispan = item.span();
                        let mut item = item;
                        let mut present = Vec::new();
                        let mut spans = Spans::default();
                        let (mut opts, mut serve, mut connect) = Default::default();
                        if let DeValue::Table(t) = item.get_mut() {
                            strip_unknown(t, listener_keys(), "[[listener]]", sink);
                            present = t.iter().map(|(k, _)| k.get_ref().to_string()).collect();
                            opts = split_opts(ListenerOpts::keys(), t, &ispan, &mut spans, sink);
                            serve = split_opts(ServeOpts::keys(), t, &ispan, &mut spans, sink);
                            connect = split_opts(ConnectOpts::keys(), t, &ispan, &mut spans, sink);
                        }
                        match RawListener::deserialize(ValueDeserializer::from(item)) {
                            Ok(raw) => raw_listeners.push((
                                ispan,
                                raw,
                                Given {
                                    present,
                                    opts,
                                    serve,
                                    connect,
                                    spans,
                                },
                            )),
                            Err(e) => sink.de(&e, ispan),
                        }
                    }
                }
                _ => sink.at(
                    span,
                    "`listener` must be an array of tables: write [[listener]] blocks",
                ),
            }
        }
    }

    let mut cfg = RunConfig {
        metrics: None,
        audit_log: None,
        threads: None,
        log_format: "human".into(),
        listeners: Vec::new(),
    };
    if let Some(g) = global {
        if let Some(m) = g.metrics {
            if host_port(m.get_ref()).is_err() {
                sink.at(
                    m.span(),
                    format!("metrics: {:?} is not HOST:PORT", m.get_ref()),
                );
            }
            cfg.metrics = Some(m.into_inner());
        }
        if let Some(a) = g.audit_log {
            let v = a.get_ref();
            if v.is_empty() {
                sink.at(a.span(), "audit_log: give a path or \"-\" for stdout");
            } else if v == "-" {
                cfg.audit_log = Some("-".into());
            } else {
                cfg.audit_log = Some(base.join(v).display().to_string());
            }
        }
        if let Some(t) = g.threads {
            match usize::try_from(*t.get_ref()) {
                Ok(n) if n >= 1 => cfg.threads = Some(n),
                _ => sink.at(t.span(), "threads must be at least 1"),
            }
        }
        if let Some(f) = g.log_format {
            match f.get_ref().as_str() {
                "human" | "json" => cfg.log_format = f.into_inner(),
                other => sink.at(
                    f.span(),
                    format!("log_format must be \"human\" or \"json\", not {other:?}"),
                ),
            }
        }
    }

    let mut names: HashMap<String, usize> = HashMap::new();
    let mut addrs: HashMap<String, usize> = HashMap::new();
    for (span, raw, given) in raw_listeners {
        let header_line = sink_line(text, span.start);
        // Duplicates are checked on the raw values, so they are reported even when the block
        // has other errors.
        if let Some(n) = &raw.name {
            if let Some(first) = names.insert(n.get_ref().clone(), header_line) {
                sink.at(
                    n.span(),
                    format!(
                        "duplicate listener name {:?} (first defined at line {first})",
                        n.get_ref()
                    ),
                );
            }
        }
        if let Some(at) = given.spans.get("listen") {
            let l = &given.opts.listen;
            let key = normalized_addr(l);
            if !key.ends_with(":0") {
                if let Some(first) = addrs.insert(key.clone(), header_line) {
                    sink.at(
                        at.clone(),
                        format!(
                            "listen address {l} is already used by the listener at line {first}"
                        ),
                    );
                }
            }
            if cfg.metrics.as_deref().map(normalized_addr) == Some(key) {
                sink.at(
                    at,
                    format!("listen address {l} is also the metrics address"),
                );
            }
        }
        if let Some(spec) = listener(raw, given, span.clone(), base, sink) {
            cfg.listeners.push(spec);
        }
    }
    Some(cfg)
}

fn sink_line(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |t| t.bytes().filter(|b| *b == b'\n').count())
        + 1
}

fn normalized_addr(s: &str) -> String {
    s.parse::<SocketAddr>()
        .map_or_else(|_| s.to_ascii_lowercase(), |a| a.to_string())
}

/// `HOST:PORT` with a numeric port (a name is resolved when binding).
fn host_port(s: &str) -> Result<(), ()> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains(':') && p.parse::<u16>().is_ok() => Ok(()),
        _ => Err(()),
    }
}

/// Every key a `[[listener]]` block takes: the block's own and the shared listener options.
fn listener_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut k = field_names::<RawListener>().to_vec();
        k.extend_from_slice(ListenerOpts::keys());
        k.extend_from_slice(ConnectOpts::keys());
        k.extend_from_slice(ServeOpts::keys());
        k
    })
}

/// Where each option value of a block is written: `key` for a value, `key[i]` for an array
/// element (so a bad `allow_*` pattern is reported at itself). A key whose value was refused
/// for its type is left out.
#[derive(Default)]
struct Spans(HashMap<String, Range<usize>>);

impl Spans {
    fn get(&self, key: &str) -> Option<Range<usize>> {
        self.0.get(key).cloned()
    }

    fn elem(&self, key: &str, i: usize) -> Option<Range<usize>> {
        self.get(&format!("{key}[{i}]")).or_else(|| self.get(key))
    }
}

/// Moves `keys` out of `table` into a table of their own, with the span of each value and of
/// each array element (so a value out of range is reported where it is written).
fn take_keys<'t>(table: &mut DeTable<'t>, keys: &[&str], spans: &mut Spans) -> DeTable<'t> {
    let mut out = DeTable::new();
    let names: Vec<_> = table
        .iter()
        .filter(|(k, _)| keys.contains(&k.get_ref().as_ref()))
        .map(|(k, _)| k.clone())
        .collect();
    for k in names {
        if let Some(v) = table.remove(k.get_ref().as_ref()) {
            let key = k.get_ref().to_string();
            if let DeValue::Array(items) = v.get_ref() {
                for (i, item) in items.iter().enumerate() {
                    spans.0.insert(format!("{key}[{i}]"), item.span());
                }
            }
            spans.0.insert(key, v.span());
            out.insert(k, v);
        }
    }
    out
}

/// Moves `T`'s keys out of a block and deserializes them. A value serde refuses is reported
/// at its span, named by its key, and left out (so the other values are still read and every
/// bad one is reported); the spans of the values go to `spans`.
fn split_opts<T: serde::de::DeserializeOwned + Default>(
    keys: &[&str],
    table: &mut DeTable<'_>,
    block: &Range<usize>,
    spans: &mut Spans,
    sink: &mut Sink<'_>,
) -> T {
    let mut sub = take_keys(table, keys, spans);
    loop {
        let attempt = T::deserialize(ValueDeserializer::from(Spanned::new(
            block.clone(),
            DeValue::Table(sub.clone()),
        )));
        let e = match attempt {
            Ok(t) => return t,
            Err(e) => e,
        };
        let at = e.span().unwrap_or(block.clone());
        let key = sub
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), v.span()))
            .find(|(_, v)| v.start <= at.start && at.end <= v.end)
            .map(|(k, _)| k);
        let Some(key) = key else {
            sink.de(&e, block.clone());
            return T::default();
        };
        // Named by its key, unless the message names it already ("invalid backend ...").
        let msg = e.message().trim().replace('\n', " ");
        let msg = if msg.starts_with("must ") {
            format!("{key} {msg}")
        } else if msg.contains(&key.replace('_', " ")) {
            msg
        } else {
            format!("{key}: {msg}")
        };
        sink.at(at, msg);
        sub.remove(key.as_str());
        spans
            .0
            .retain(|k, _| k != &key && !k.starts_with(&format!("{key}[")));
    }
}

/// What a block gave besides its own keys: which keys were written, and the option types
/// shared with the flags, with the spans of their values.
struct Given {
    present: Vec<String>,
    opts: ListenerOpts,
    serve: ServeOpts,
    connect: ConnectOpts,
    spans: Spans,
}

/// One block: every check that can be made on it alone.
fn listener(
    raw: RawListener,
    given: Given,
    span: Range<usize>,
    base: &Path,
    sink: &mut Sink<'_>,
) -> Option<ListenerSpec> {
    let before = sink.out.len();
    let header = span.start..span.start;
    let line = sink_line(sink.text, span.start);
    let name = match &raw.name {
        Some(n) if valid_name(n.get_ref()) => n.get_ref().clone(),
        Some(n) => {
            sink.at(
                n.span(),
                format!(
                    "listener name {:?}: use letters, digits, '-', '_' or '.' (it becomes a metrics label)",
                    n.get_ref()
                ),
            );
            String::new()
        }
        None => {
            sink.at(header.clone(), "listener without `name` (required, unique)");
            String::new()
        }
    };
    let kind = match &raw.kind {
        Some(k) if k.get_ref() == "serve" || k.get_ref() == "connect" => k.get_ref().clone(),
        Some(k) => {
            sink.at(
                k.span(),
                format!(
                    "kind must be \"serve\" or \"connect\", not {:?}",
                    k.get_ref()
                ),
            );
            return None;
        }
        None => {
            sink.at(
                header.clone(),
                "listener without `kind` (\"serve\" or \"connect\")",
            );
            return None;
        }
    };
    // Keys of the other kind are mistakes (a `backend` on a connect listener is never used).
    for key in &given.present {
        let key = key.as_str();
        let wrong = if kind == "serve" {
            connect_only(key)
        } else {
            serve_only(key)
        };
        if wrong {
            let other = if kind == "serve" { "connect" } else { "serve" };
            sink.at(
                header.clone(),
                format!(
                    "`{key}` applies to kind = \"{other}\" listeners only (this one is \"{kind}\")"
                ),
            );
        }
    }

    let Given {
        present,
        mut opts,
        serve: mut sv,
        connect: c,
        spans,
    } = given;
    let at = |k: &str| spans.get(k).unwrap_or(header.clone());
    let written = |k: &str| present.iter().any(|p| p == k);
    match spans.get("listen") {
        None if !written("listen") => {
            sink.at(header.clone(), "listener without `listen` (HOST:PORT)")
        }
        Some(span) if host_port(&opts.listen).is_err() => sink.at(
            span,
            format!(
                "listen: {:?} is not HOST:PORT (e.g. 0.0.0.0:8443)",
                opts.listen
            ),
        ),
        _ => {}
    }

    let enroll = enrollment(&raw, base, sink);
    // Judged on the values as written: a missing file below is reported there, not again as
    // an absent key.
    let problems = opts.problems();
    for (key, path) in [
        ("cert", &mut opts.cert),
        ("key", &mut opts.key),
        ("ca", &mut opts.ca),
    ] {
        match spans.get(key) {
            // Missing files (or files beside workload_api) are `problems()` below.
            None => {}
            // Enrollment writes the files: they need not exist yet.
            Some(_) if enroll.is_some() && !path.as_os_str().is_empty() => {
                *path = base.join(&*path)
            }
            // A key in a PKCS#11 token (docs/keys.md) is a URI, not a path: opened at build.
            Some(_) if key == "key" && mutual_tls::load::is_pkcs11(path) => {}
            Some(span) => *path = existing(path, span, base, sink).unwrap_or_default(),
        }
    }

    if enroll.is_some() && opts.workload_api.is_some() {
        sink.at(
            at("workload_api"),
            "workload_api and ca_url both give the listener its certificate: use one",
        );
    }
    for p in problems {
        sink.at(at(p.key), p.for_key());
    }

    let kind = if kind == "serve" {
        for p in sv.problems(&opts) {
            sink.at(at(p.key), p.for_key());
        }
        if !written("backend") {
            sink.at(
                header.clone(),
                "`backend` is required (HOST:PORT or unix:/path)",
            );
        }
        sv.crls = std::mem::take(&mut sv.crls)
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                existing(
                    c,
                    spans.elem("crls", i).unwrap_or(header.clone()),
                    base,
                    sink,
                )
            })
            .collect();
        // What the flags' `requires` refuses, for the keys: a key that would set nothing.
        let http = sv.mode == crate::http::Mode::Http;
        let needs = [
            (
                "crl_leaf_only",
                sv.crl_leaf_only && !written("crls"),
                "needs `crls`",
            ),
            (
                "crl_cache_dir",
                sv.crl_cache_dir.is_some() && !sv.crl_from_cdp,
                "needs crl_from_cdp = true (it is where fetched CRLs are kept)",
            ),
            (
                "forward_client_cert",
                written("forward_client_cert") && !http,
                "only applies with mode = \"http\"",
            ),
            (
                "forward_client_cert_details",
                written("forward_client_cert_details") && !http,
                "only applies with mode = \"http\"",
            ),
        ];
        for (key, _, why) in needs.iter().filter(|(_, unmet, _)| *unmet) {
            sink.at(at(key), format!("{key} {why}"));
        }
        sv.crl_cache_dir = sv.crl_cache_dir.map(|d| base.join(d));
        let policy_flags = inline_policy(&raw, &sv, &spans, http, sink);
        if let (Some(p), Some(span)) = (sv.policy.take(), spans.get("policy")) {
            sv.policy = existing(&p, span.clone(), base, sink);
            if let Some(path) = &sv.policy {
                match crate::serve::load_policy(&Policy::default(), Some(path)) {
                    Ok(pol) => {
                        if !http && pol.has_http_rules() {
                            sink.at(
                                span.clone(),
                                format!("policy file {}: rules with `methods`/`paths` only apply with mode = \"http\"", path.display()),
                            );
                        }
                        if pol.is_empty() && policy_flags.is_empty() {
                            sink.at(
                                span,
                                format!("policy file {} has no [[allow]] rule and the listener has no other: every client would be denied", path.display()),
                            );
                        }
                    }
                    Err(e) => sink.at(span, e.to_string()),
                }
            }
        }
        let inline_rules = raw.allow.as_ref().is_some_and(|v| !v.is_empty());
        let any_rule_key = [
            "allow_spiffe",
            "allow_dns",
            "allow_cn",
            "allow_ou",
            "policy",
        ]
        .iter()
        .any(|k| written(k))
            || inline_rules
            || sv.allow_any;
        if sv.allow_any && inline_rules {
            sink.at(
                at("allow_any"),
                "allow_any allows every verified client, so [[listener.allow]] rules beside it \
                 would restrict nothing: give one or the other",
            );
        }
        // (A rule that failed to parse was reported already; do not add "allows no one".)
        if !any_rule_key {
            sink.at(
                header.clone(),
                format!("serve listener {name:?} allows no one: add allow_spiffe/allow_dns/allow_cn/allow_ou, [[listener.allow]] rules, a `policy` file, or allow_any = true"),
            );
        }
        let cdp = sv
            .cdp(&opts, || {
                crate::cdp::default_cache_dir().or_else(|| Some(base.join("crl-cache")))
            })
            .flatten();
        sv.config(name.clone(), &opts, policy_flags, cdp)
            .ok()
            .map(|s| ListenerKind::Serve(Box::new(s)))
    } else {
        match spans.get("remote") {
            None if !written("remote") => {
                sink.at(header.clone(), "`remote` is required (HOST:PORT)")
            }
            Some(span) if host_port(&c.remote).is_err() => {
                sink.at(span, format!("remote: {:?} is not HOST:PORT", c.remote))
            }
            _ => {}
        }
        for p in c.problems(&opts) {
            sink.at(at(p.key), p.for_key());
        }
        if c.server_name.is_some() && c.expect_spiffe.is_some() {
            sink.at(
                at("server_name"),
                "give server_name or expect_spiffe, not both",
            );
        }
        if let Some(id) = &c.expect_spiffe {
            if let Err(e) = mutual_policy::SpiffeId::parse(id) {
                sink.at(at("expect_spiffe"), format!("expect_spiffe: {e}"));
            }
        }
        if let Ok(a) = opts.listen.parse::<SocketAddr>() {
            if let Err(e) = crate::connect::check_loopback(a, c.allow_remote_clients) {
                sink.at(
                    at("listen"),
                    e.to_string()
                        .replace("--allow-remote-clients", "allow_remote_clients = true"),
                );
            }
        }
        Some(ListenerKind::Connect(Box::new(
            c.config(name.clone(), &opts),
        )))
    };
    if sink.out.len() > before {
        return None;
    }
    Some(ListenerSpec {
        name,
        listen: opts.listen,
        line,
        kind: kind?,
        enroll,
    })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Resolves a path as written against the config file's directory and checks that it exists;
/// a problem is reported at `span`.
fn existing(p: &Path, span: Range<usize>, base: &Path, sink: &mut Sink<'_>) -> Option<PathBuf> {
    if p.as_os_str().is_empty() {
        sink.at(span, "empty path");
        return None;
    }
    let path = base.join(p);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Some(path),
        Ok(_) => {
            sink.at(span, format!("{} is not a file", path.display()));
            None
        }
        Err(e) => {
            sink.at(span, format!("{}: {e}", path.display()));
            None
        }
    }
}

/// `ca_url`, `token_file`, `root_sha256`: checked as `serve --ca-url` checks its flags.
fn enrollment(raw: &RawListener, base: &Path, sink: &mut Sink<'_>) -> Option<Enrollment> {
    let key_span = |k: &Option<S>| k.as_ref().map(|s| s.span());
    if let Some(h) = &raw.root_sha256 {
        let hex = h.get_ref().replace(':', "");
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            sink.at(
                h.span(),
                "root_sha256 must be a SHA-256 fingerprint (64 hex digits)",
            );
        }
    }
    let Some(urls) = &raw.ca_url else {
        for (k, span) in [
            ("token_file", key_span(&raw.token_file)),
            ("root_sha256", key_span(&raw.root_sha256)),
        ] {
            if let Some(span) = span {
                sink.at(
                    span,
                    format!("{k} needs ca_url (the online CA to enroll with)"),
                );
            }
        }
        return None;
    };
    let fallback = key_span(&raw.token_file)
        .or(key_span(&raw.root_sha256))
        .unwrap_or(0..0);
    let urls: Vec<String> = urls.iter().filter(|u| !u.is_empty()).cloned().collect();
    if urls.is_empty() {
        sink.at(fallback.clone(), "ca_url: give https://HOST[:PORT]");
    }
    for u in &urls {
        if !u.starts_with("https://") {
            sink.at(
                fallback.clone(),
                format!("ca_url {u:?}: the online CA is reached over https://HOST[:PORT]"),
            );
        }
    }
    if raw.token_file.is_some() && raw.root_sha256.is_none() {
        sink.at(
            fallback,
            "token_file needs root_sha256 (the CA root to pin when enrolling)",
        );
    }
    Some(Enrollment {
        ca_url: urls,
        token_file: raw
            .token_file
            .as_ref()
            .and_then(|p| existing(Path::new(p.get_ref()), p.span(), base, sink)),
        root_sha256: raw.root_sha256.as_ref().map(|s| s.get_ref().clone()),
    })
}

/// The allow_* keys (built as the flags build them) and `[[listener.allow]]` rules as one
/// policy; each bad pattern is reported at its own array element.
fn inline_policy(
    raw: &RawListener,
    sv: &ServeOpts,
    spans: &Spans,
    http: bool,
    sink: &mut Sink<'_>,
) -> Policy {
    let mut policy = sv.inline_policy().unwrap_or_else(|_| {
        let groups = [
            ("allow_spiffe", &sv.allow_spiffe),
            ("allow_dns", &sv.allow_dns),
            ("allow_cn", &sv.allow_cn),
            ("allow_ou", &sv.allow_ou),
        ];
        for (slot, (key, values)) in groups.iter().enumerate() {
            for (i, v) in values.iter().enumerate() {
                let mut args: [&[String]; 4] = [&[], &[], &[], &[]];
                args[slot] = std::slice::from_ref(v);
                if let Err(e) = Policy::from_flags(args[0], args[1], args[2], args[3], false) {
                    sink.at(spans.elem(key, i).unwrap_or(0..0), e.to_string());
                }
            }
        }
        Policy::default()
    });
    for rule in raw.allow.iter().flatten() {
        let span = rule.span();
        let table = rule.get_ref();
        let mut ok = true;
        for k in table.keys() {
            if !RULE_KEYS.contains(&k.as_str()) {
                let hint = closest(k, RULE_KEYS)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                sink.at(
                    span.clone(),
                    format!("unknown key `{k}` in [[listener.allow]]{hint}"),
                );
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        let mut doc = toml::Table::new();
        doc.insert(
            "allow".into(),
            toml::Value::Array(vec![toml::Value::Table(table.clone())]),
        );
        let parsed = toml::to_string(&doc)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                Policy::from_toml(&t).map_err(|e| match e {
                    mutual_policy::PolicyError::InRule { source, .. } => source.to_string(),
                    other => other.to_string(),
                })
            });
        match parsed {
            Ok(p) => {
                if !http && p.has_http_rules() {
                    sink.at(
                        span.clone(),
                        "`methods`/`paths` only apply with mode = \"http\" (a TCP listener never sees requests)",
                    );
                }
                policy = policy.merged(p);
            }
            Err(msg) => sink.at(span.clone(), format!("[[listener.allow]]: {msg}")),
        }
    }
    policy
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    fn dir_with_files() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in ["s.pem", "s.key", "root.pem", "c.pem", "c.key", "crl.pem"] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        std::fs::write(
            d.path().join("policy.toml"),
            "[[allow]]\nspiffe = \"spiffe://t/x\"\n",
        )
        .unwrap();
        d
    }

    const GOOD: &str = r#"
metrics = "127.0.0.1:9090"
audit_log = "audit.log"
threads = 2

[[listener]]
name = "api"
kind = "serve"
listen = "127.0.0.1:8443"
backend = "127.0.0.1:8080"
cert = "s.pem"
key = "s.key"
ca = "root.pem"
crls = ["crl.pem"]
crl_leaf_only = true
allow_spiffe = ["spiffe://t/a/*"]
idle_timeout = "1m"
[[listener.allow]]
dns = "*.ops.example"

[[listener]]
name = "files"
kind = "serve"
listen = "127.0.0.1:8444"
backend = "unix:/tmp/x.sock"
cert = "s.pem"
key = "s.key"
ca = "root.pem"
policy = "policy.toml"

[[listener]]
name = "out"
kind = "connect"
listen = "127.0.0.1:7000"
remote = "api.internal:8443"
cert = "c.pem"
key = "c.key"
ca = "root.pem"
expect_spiffe = "spiffe://t/api"
"#;

    #[test]
    fn a_good_file_gives_three_listeners_with_resolved_paths() {
        let d = dir_with_files();
        let c = parse(GOOD, d.path()).unwrap();
        assert_eq!(c.listeners.len(), 3);
        assert_eq!(c.threads, Some(2));
        assert_eq!(
            c.audit_log.as_deref(),
            Some(d.path().join("audit.log").to_str().unwrap())
        );
        let ListenerKind::Serve(api) = &c.listeners[0].kind else {
            panic!()
        };
        assert_eq!(api.name, "api");
        assert_eq!(api.tls.cert, d.path().join("s.pem"));
        assert_eq!(api.tls.crls, vec![d.path().join("crl.pem")]);
        assert!(api.tls_options.revocation.leaf_only);
        assert_eq!(api.policy_flags.rules().len(), 2);
        assert_eq!(api.idle_timeout, Duration::from_secs(60));
        assert_eq!(api.handshake_timeout, Duration::from_secs(10));
        let ListenerKind::Connect(out) = &c.listeners[2].kind else {
            panic!()
        };
        assert_eq!(out.tls.expect_spiffe.as_deref(), Some("spiffe://t/api"));
        assert_eq!(c.listeners[2].line, 31);
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let d = dir_with_files();
        let text = r#"threads = 0
bogus = 1

[[listener]]
name = "a"
kind = "serve"
listen = "127.0.0.1:1"
backend = "127.0.0.1:2"
cert = "missing.pem"
key = "s.key"
ca = "root.pem"
allow_spiffe = ["http://not-spiffe"]
idle_timeout = "5 parsecs"
colour = "blue"

[[listener]]
name = "a"
kind = "serve"
listen = "127.0.0.1:1"
backend = "127.0.0.1:2"
cert = "s.pem"
key = "s.key"
ca = "root.pem"
"#;
        let errs = parse(text, d.path()).unwrap_err();
        let lines: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.message.as_str())).collect();
        let has = |line: usize, needle: &str| {
            assert!(
                lines.iter().any(|(l, m)| *l == line && m.contains(needle)),
                "no error at line {line} containing {needle:?} in {lines:#?}"
            );
        };
        has(1, "threads must be at least 1");
        has(2, "unknown key `bogus`");
        has(9, "missing.pem");
        has(12, "a SPIFFE pattern starts with spiffe://");
        has(13, "parsecs");
        has(14, "unknown key `colour`");
        has(16, "allows no one");
        has(
            17,
            "duplicate listener name \"a\" (first defined at line 4)",
        );
        has(19, "already used by the listener at line 4");
    }

    /// A bad `allow_*` pattern is reported at its own array element; a value of the wrong type
    /// at itself, named by its key, without hiding the block's other problems.
    #[test]
    fn a_bad_value_points_at_itself() {
        let d = dir_with_files();
        let text = "[[listener]]\nname = \"a\"\nkind = \"serve\"\nlisten = \"127.0.0.1:1\"\n\
                    backend = 5\ncert = \"s.pem\"\nkey = \"s.key\"\nca = \"nope.pem\"\n\
                    allow_spiffe = [\"spiffe://t/a\", \"http://x\"]\n";
        let errs = parse(text, d.path()).unwrap_err();
        let all: Vec<String> = errs
            .iter()
            .map(|e| format!("{}:{} {}", e.line, e.col, e.message))
            .collect();
        assert!(
            all.iter()
                .any(|e| e.starts_with("5:11 backend: invalid type")),
            "{all:#?}"
        );
        assert!(
            all.iter()
                .any(|e| e.starts_with("8:6 ") && e.contains("nope.pem")),
            "{all:#?}"
        );
        assert!(
            all.iter()
                .any(|e| e.starts_with("9:33 ") && e.contains("starts with spiffe://")),
            "{all:#?}"
        );
        assert!(
            !all.iter().any(|e| e.contains("`backend` is required")),
            "{all:#?}"
        );
        // A message that names its key already is not prefixed again.
        let errs = parse(&text.replace("backend = 5", "backend = \"nope\""), d.path()).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.line == 5 && e.message.starts_with("invalid backend \"nope\"")),
            "{errs:#?}"
        );
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let errs = parse("[[listener]]\nname = \"a\nkind = 3\n", Path::new(".")).unwrap_err();
        assert!(!errs.is_empty());
        assert_eq!(errs[0].line, 2, "{errs:?}");
        assert!(errs[0].col > 1);
    }

    #[test]
    fn keys_of_the_other_kind_and_bad_enums_are_errors() {
        let d = dir_with_files();
        let text = r#"[[listener]]
name = "o"
kind = "connect"
listen = "0.0.0.0:7000"
remote = "x:1"
backend = "127.0.0.1:2"
cert = "c.pem"
key = "c.key"
ca = "root.pem"
min_tls = "1.1"

[[listener]]
name = "s"
kind = "serve"
mode = "udp"
listen = "127.0.0.1:1"
backend = "127.0.0.1:2"
cert = "s.pem"
key = "s.key"
ca = "root.pem"
allow_any = true
[[listener.allow]]
spiffe = "spiffe://t/x"
paths = ["/a"]
"#;
        let errs = parse(text, d.path()).unwrap_err();
        let all = errs
            .iter()
            .map(|e| format!("{}:{} {}", e.line, e.col, e.message))
            .collect::<Vec<_>>()
            .join("\n");
        for needle in [
            "1:1 `backend` applies to kind = \"serve\"",
            "4:10 0.0.0.0:7000 is not a loopback address",
            "10:11 min_tls must be one of \"1.2\", \"1.3\", not \"1.1\"",
            "15:8 mode must be one of \"tcp\", \"http\", not \"udp\"",
            "only apply with mode = \"http\"",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }

    #[test]
    fn edge_keys_reach_the_serve_config_and_enrollment_keys_are_kept() {
        let d = dir_with_files();
        let text = GOOD.replace(
            "idle_timeout = \"1m\"",
            "idle_timeout = \"1m\"\nproxy_protocol = \"v2\"\nmax_connection_lifetime = \"1h\"",
        );
        let c = parse(&text, d.path()).unwrap();
        let ListenerKind::Serve(cfg) = &c.listeners[0].kind else {
            panic!("listener 0 is a serve listener");
        };
        assert!(cfg.proxy_protocol.is_some());
        assert_eq!(cfg.max_connection_lifetime, Some(Duration::from_secs(3600)));
        assert!(c.listeners[1].enroll.is_none());
        let text = GOOD.replace(
            "idle_timeout = \"1m\"",
            "idle_timeout = \"1m\"\nca_url = \"https://ca.internal:9443, https://ca2.internal:9443\"",
        );
        let c = parse(&text, d.path()).unwrap();
        assert_eq!(
            c.listeners[0].enroll.as_ref().map(|e| e.ca_url.clone()),
            Some(vec![
                "https://ca.internal:9443".to_string(),
                "https://ca2.internal:9443".to_string()
            ])
        );
    }

    #[test]
    fn fingerprint_changes_only_with_the_block() {
        let d = dir_with_files();
        let a = parse(GOOD, d.path()).unwrap();
        let b = parse(&GOOD.replace("spiffe://t/a/*", "spiffe://t/b/*"), d.path()).unwrap();
        assert_ne!(a.listeners[0].fingerprint(), b.listeners[0].fingerprint());
        assert_eq!(a.listeners[1].fingerprint(), b.listeners[1].fingerprint());
        assert_eq!(a.listeners[2].fingerprint(), b.listeners[2].fingerprint());
    }
}
