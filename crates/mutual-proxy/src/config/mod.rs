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
    pub const MIN_TLS: &str = "1.3";
    pub const PROFILE: &str = "compatible";
    pub const FORWARD_CLIENT_CERT: &str = "xfcc";
    pub const REVOCATION_UNKNOWN: &str = "deny";

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
    /// The values of the keys with a spelling of their own in the file (already mapped into
    /// the `ServeConfig`), kept so the fingerprint sees them as written.
    pub pending: Pending,
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

/// Values of keys spelled differently in the file than in the proxy's types (`mode` is
/// `--http`, CDP settings are grouped); parsed and validated here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// `tcp` | `http`.
    pub mode: Option<String>,
    /// `xfcc` | `rfc9440` | `both` | `none`.
    pub forward_client_cert: Option<String>,
    /// Extra XFCC elements, comma-joined (`cert`, `chain`).
    pub forward_client_cert_details: Option<String>,
    /// `v2` (the only version written).
    pub proxy_protocol: Option<String>,
    pub crl_from_cdp: bool,
    pub crl_cache_dir: Option<PathBuf>,
}

impl ListenerSpec {
    /// A text that changes exactly when the block's meaning changes: a reload keeps a listener
    /// whose fingerprint is the same untouched (its files are watched on their own).
    pub fn fingerprint(&self) -> String {
        format!(
            "{}|{:?}|{:?}|{:?}",
            self.listen, self.kind, self.pending, self.enroll
        )
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

/// Keys that only mean something on a serve listener: these and [`ServeOpts`]'s.
const SERVE_ONLY: &[&str] = &[
    "backend",
    "crls",
    "crl_cache_dir",
    "policy",
    "allow_spiffe",
    "allow_dns",
    "allow_cn",
    "allow_ou",
    "allow",
    "mode",
    "forward_client_cert",
    "forward_client_cert_details",
    "proxy_protocol",
];

fn serve_only(key: &str) -> bool {
    SERVE_ONLY.contains(&key) || ServeOpts::keys().contains(&key)
}

/// Keys that only mean something on a connect listener: `remote` and [`ConnectOpts`]'s.
fn connect_only(key: &str) -> bool {
    key == "remote" || ConnectOpts::keys().contains(&key)
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<S>,
    kind: Option<S>,
    mode: Option<S>,
    listen: Option<S>,
    backend: Option<S>,
    remote: Option<S>,
    cert: Option<S>,
    key: Option<S>,
    ca: Option<S>,
    crls: Option<Vec<S>>,
    crl_cache_dir: Option<S>,
    policy: Option<S>,
    allow_spiffe: Option<Vec<S>>,
    allow_dns: Option<Vec<S>>,
    allow_cn: Option<Vec<S>>,
    allow_ou: Option<Vec<S>>,
    allow: Option<Vec<Spanned<toml::Table>>>,
    forward_client_cert: Option<S>,
    forward_client_cert_details: Option<Vec<S>>,
    proxy_protocol: Option<S>,
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
                        let mut spans = HashMap::new();
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
        if let Some(l) = &raw.listen {
            let key = normalized_addr(l.get_ref());
            if !key.ends_with(":0") {
                if let Some(first) = addrs.insert(key.clone(), header_line) {
                    sink.at(
                        l.span(),
                        format!(
                            "listen address {} is already used by the listener at line {first}",
                            l.get_ref()
                        ),
                    );
                }
            }
            if cfg.metrics.as_deref().map(normalized_addr) == Some(key) {
                sink.at(
                    l.span(),
                    format!("listen address {} is also the metrics address", l.get_ref()),
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

/// Moves `keys` out of `table` into a table of their own, with the span of each value (so a
/// value out of range is reported where it is written).
fn take_keys<'t>(
    table: &mut DeTable<'t>,
    keys: &[&str],
) -> (DeTable<'t>, HashMap<String, Range<usize>>) {
    let mut out = DeTable::new();
    let mut spans = HashMap::new();
    let names: Vec<_> = table
        .iter()
        .filter(|(k, _)| keys.contains(&k.get_ref().as_ref()))
        .map(|(k, _)| k.clone())
        .collect();
    for k in names {
        if let Some(v) = table.remove(k.get_ref().as_ref()) {
            spans.insert(k.get_ref().to_string(), v.span());
            out.insert(k, v);
        }
    }
    (out, spans)
}

/// Moves `T`'s keys out of a block and deserializes them (a bad value is reported at its span
/// and `T`'s defaults stand in, so the block's other problems are still found); the spans of
/// the values go to `spans`.
fn split_opts<T: serde::de::DeserializeOwned + Default>(
    keys: &[&str],
    table: &mut DeTable<'_>,
    block: &Range<usize>,
    spans: &mut HashMap<String, Range<usize>>,
    sink: &mut Sink<'_>,
) -> T {
    let (sub, sub_spans) = take_keys(table, keys);
    spans.extend(sub_spans);
    T::deserialize(ValueDeserializer::from(Spanned::new(
        block.clone(),
        DeValue::Table(sub),
    )))
    .unwrap_or_else(|e| {
        sink.de(&e, block.clone());
        T::default()
    })
}

/// What a block gave besides its own keys: which keys were present, and the option types
/// shared with the flags, with the spans of their values.
struct Given {
    present: Vec<String>,
    opts: ListenerOpts,
    serve: ServeOpts,
    connect: ConnectOpts,
    spans: HashMap<String, Range<usize>>,
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

    let listen = match &raw.listen {
        Some(l) if host_port(l.get_ref()).is_ok() => l.get_ref().clone(),
        Some(l) => {
            sink.at(
                l.span(),
                format!(
                    "listen: {:?} is not HOST:PORT (e.g. 0.0.0.0:8443)",
                    l.get_ref()
                ),
            );
            String::new()
        }
        None => {
            sink.at(header.clone(), "listener without `listen` (HOST:PORT)");
            String::new()
        }
    };

    let enroll = enrollment(&raw, base, sink);
    let file = |v: &Option<S>, key: &str, sink: &mut Sink<'_>| -> Option<PathBuf> {
        match v {
            None => {
                sink.at(header.clone(), format!("`{key}` is required"));
                None
            }
            // Enrollment writes the files: they need not exist yet.
            Some(p) if enroll.is_some() && !p.get_ref().is_empty() => Some(base.join(p.get_ref())),
            // A key in a PKCS#11 token (docs/keys.md) is a URI, not a path: opened at build.
            Some(p) if key == "key" && mutual_tls::load::is_pkcs11(Path::new(p.get_ref())) => {
                Some(PathBuf::from(p.get_ref()))
            }
            Some(p) => existing(p, base, sink),
        }
    };
    let cert = file(&raw.cert, "cert", sink);
    let key = file(&raw.key, "key", sink);
    let ca = file(&raw.ca, "ca", sink);

    let opts = given.opts;
    let sv = &given.serve;
    let problems = opts.problems().into_iter().chain(if kind == "serve" {
        sv.problems()
    } else {
        Vec::new()
    });
    for p in problems {
        let at = given.spans.get(p.key).cloned();
        sink.at(at.unwrap_or_else(|| header.clone()), p.for_key());
    }
    let handshake_timeout = opts.handshake_timeout.get();
    let idle_timeout = opts.idle_timeout.get();
    let connect_timeout = opts.connect_timeout.get();
    let limits = opts.limits();

    let pending = pending(&raw, given.serve.crl_from_cdp, base, sink);

    let kind = if kind == "serve" {
        let backend = match &raw.backend {
            None => {
                sink.at(
                    header.clone(),
                    "`backend` is required (HOST:PORT or unix:/path)",
                );
                None
            }
            Some(b) => match b.get_ref().parse::<crate::Backend>() {
                Ok(be) => Some(be),
                Err(e) => {
                    sink.at(b.span(), e.to_string());
                    None
                }
            },
        };
        let crls: Vec<PathBuf> = raw
            .crls
            .iter()
            .flatten()
            .filter_map(|c| existing(c, base, sink))
            .collect();
        if sv.crl_leaf_only && raw.crls.as_ref().is_none_or(Vec::is_empty) {
            sink.at(header.clone(), "crl_leaf_only needs `crls`");
        }
        let allow_unknown = sv.allow_unknown();
        let http = pending.mode.as_deref() == Some("http");
        let policy_flags = inline_policy(&raw, sv.allow_any, http, sink);
        let policy_file = match &raw.policy {
            None => None,
            Some(p) => {
                let path = existing(p, base, sink);
                if let Some(path) = &path {
                    match crate::serve::load_policy(&Policy::default(), Some(path)) {
                        Ok(pol) => {
                            if !http && pol.has_http_rules() {
                                sink.at(
                                    p.span(),
                                    format!("policy file {}: rules with `methods`/`paths` only apply with mode = \"http\"", path.display()),
                                );
                            }
                            if pol.is_empty() && policy_flags.is_empty() {
                                sink.at(
                                    p.span(),
                                    format!("policy file {} has no [[allow]] rule and the listener has no other: every client would be denied", path.display()),
                                );
                            }
                        }
                        Err(e) => sink.at(p.span(), e.to_string()),
                    }
                }
                path
            }
        };
        let any_rule_key = raw.allow_spiffe.as_ref().is_some_and(|v| !v.is_empty())
            || raw.allow_dns.as_ref().is_some_and(|v| !v.is_empty())
            || raw.allow_cn.as_ref().is_some_and(|v| !v.is_empty())
            || raw.allow_ou.as_ref().is_some_and(|v| !v.is_empty())
            || raw.allow.as_ref().is_some_and(|v| !v.is_empty())
            || sv.allow_any;
        // (A rule that failed to parse was reported already; do not add "allows no one".)
        if !any_rule_key && raw.policy.is_none() {
            sink.at(
                header.clone(),
                format!("serve listener {name:?} allows no one: add allow_spiffe/allow_dns/allow_cn/allow_ou, [[listener.allow]] rules, a `policy` file, or allow_any = true"),
            );
        }
        match (cert, key, ca, backend) {
            (Some(cert), Some(key), Some(ca), Some(backend)) => {
                Some(ListenerKind::Serve(Box::new(ServeConfig {
                    name: name.clone(),
                    tls: opts.server_settings(cert, key, ca, crls),
                    tls_options: sv.tls_options(&opts),
                    policy_flags,
                    policy_file,
                    backend,
                    handshake_timeout,
                    idle_timeout,
                    connect_timeout,
                    limits,
                    mode: if http {
                        crate::http::Mode::Http
                    } else {
                        crate::http::Mode::Tcp
                    },
                    http: crate::http::HttpOptions {
                        forward_client_cert: pending
                            .forward_client_cert
                            .as_deref()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or_default(),
                        details: pending
                            .forward_client_cert_details
                            .as_deref()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or_default(),
                    },
                    proxy_protocol: pending
                        .proxy_protocol
                        .as_deref()
                        .and_then(|p| p.parse().ok()),
                    max_connection_lifetime: opts.max_connection_lifetime(),
                    end_on_peer_expiry: sv.end_on_peer_expiry,
                    crl_from_cdp: pending.crl_from_cdp.then(|| {
                        crate::cdp::CdpSettings::new(
                            !allow_unknown,
                            pending
                                .crl_cache_dir
                                .clone()
                                .or_else(crate::cdp::default_cache_dir)
                                .unwrap_or_else(|| base.join("crl-cache")),
                        )
                    }),
                })))
            }
            _ => None,
        }
    } else {
        let remote = match &raw.remote {
            None => {
                sink.at(header.clone(), "`remote` is required (HOST:PORT)");
                None
            }
            Some(r) if host_port(r.get_ref()).is_ok() => Some(r.get_ref().clone()),
            Some(r) => {
                sink.at(
                    r.span(),
                    format!("remote: {:?} is not HOST:PORT", r.get_ref()),
                );
                None
            }
        };
        let c = &given.connect;
        let span_of = |k: &str| given.spans.get(k).cloned().unwrap_or(header.clone());
        if c.server_name.is_some() && c.expect_spiffe.is_some() {
            sink.at(
                span_of("server_name"),
                "give server_name or expect_spiffe, not both",
            );
        }
        if let Some(id) = &c.expect_spiffe {
            if let Err(e) = mutual_policy::SpiffeId::parse(id) {
                sink.at(span_of("expect_spiffe"), format!("expect_spiffe: {e}"));
            }
        }
        if let (Some(l), Ok(a)) = (&raw.listen, listen.parse::<SocketAddr>()) {
            if let Err(e) = crate::connect::check_loopback(a, c.allow_remote_clients) {
                sink.at(
                    l.span(),
                    e.to_string()
                        .replace("--allow-remote-clients", "allow_remote_clients = true"),
                );
            }
        }
        match (cert, key, ca, remote) {
            (Some(cert), Some(key), Some(ca), Some(remote)) => {
                Some(ListenerKind::Connect(Box::new(ConnectConfig {
                    name: name.clone(),
                    tls: opts.client_settings(cert, key, ca, c),
                    remote,
                    handshake_timeout,
                    idle_timeout,
                    connect_timeout,
                    limits,
                    max_connection_lifetime: opts.max_connection_lifetime(),
                    profile: opts.profile(),
                })))
            }
            _ => None,
        }
    };
    if sink.out.len() > before {
        return None;
    }
    Some(ListenerSpec {
        name,
        listen,
        line,
        kind: kind?,
        pending,
        enroll,
    })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Resolves a path against the config file's directory and checks that it exists.
fn existing(p: &S, base: &Path, sink: &mut Sink<'_>) -> Option<PathBuf> {
    let path = base.join(p.get_ref());
    if p.get_ref().is_empty() {
        sink.at(p.span(), "empty path");
        return None;
    }
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Some(path),
        Ok(_) => {
            sink.at(p.span(), format!("{} is not a file", path.display()));
            None
        }
        Err(e) => {
            sink.at(p.span(), format!("{}: {e}", path.display()));
            None
        }
    }
}

fn one_of(v: &Option<S>, key: &str, allowed: &[&str], sink: &mut Sink<'_>) -> Option<String> {
    let v = v.as_ref()?;
    if allowed.contains(&v.get_ref().as_str()) {
        Some(v.get_ref().clone())
    } else {
        let list = allowed
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        sink.at(
            v.span(),
            format!("{key} must be one of {list}, not {:?}", v.get_ref()),
        );
        None
    }
}

fn pending(raw: &RawListener, crl_from_cdp: bool, base: &Path, sink: &mut Sink<'_>) -> Pending {
    Pending {
        mode: one_of(&raw.mode, "mode", &["tcp", "http"], sink),
        forward_client_cert: one_of(
            &raw.forward_client_cert,
            "forward_client_cert",
            &["xfcc", "rfc9440", "both", "none"],
            sink,
        ),
        forward_client_cert_details: raw.forward_client_cert_details.as_ref().and_then(|v| {
            let joined = v
                .iter()
                .map(|s| s.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(",");
            match joined.parse::<crate::http::XfccDetails>() {
                Ok(_) => Some(joined),
                Err(e) => {
                    let span = v.first().map(|s| s.span()).unwrap_or(0..0);
                    sink.at(span, format!("forward_client_cert_details: {e}"));
                    None
                }
            }
        }),
        proxy_protocol: one_of(&raw.proxy_protocol, "proxy_protocol", &["v2"], sink),
        crl_from_cdp,
        crl_cache_dir: raw.crl_cache_dir.as_ref().map(|p| base.join(p.get_ref())),
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
            .and_then(|p| existing(p, base, sink)),
        root_sha256: raw.root_sha256.as_ref().map(|s| s.get_ref().clone()),
    })
}

/// The allow_* keys and `[[listener.allow]]` rules as one policy; each bad pattern is reported
/// at its own value.
fn inline_policy(raw: &RawListener, allow_any: bool, http: bool, sink: &mut Sink<'_>) -> Policy {
    let mut policy = Policy::default();
    let groups: [(&Option<Vec<S>>, usize); 4] = [
        (&raw.allow_spiffe, 0),
        (&raw.allow_dns, 1),
        (&raw.allow_cn, 2),
        (&raw.allow_ou, 3),
    ];
    for (values, slot) in groups {
        for v in values.iter().flatten() {
            let one = std::slice::from_ref(v.get_ref());
            let none: &[String] = &[];
            let mut args = [none, none, none, none];
            args[slot] = one;
            match Policy::from_flags(args[0], args[1], args[2], args[3], false) {
                Ok(p) => policy = policy.merged(p),
                Err(e) => sink.at(v.span(), e.to_string()),
            }
        }
    }
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
    if allow_any {
        policy = policy.merged(Policy::from_flags(&[], &[], &[], &[], true).unwrap_or_default());
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
            "10:11 min_tls must be",
            "15:8 mode must be one of",
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
        let p = &c.listeners[0].pending;
        assert_eq!(p.proxy_protocol.as_deref(), Some("v2"));
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
