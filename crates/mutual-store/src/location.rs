//! Where the inventory lives, as the operator writes it: `sqlite:PATH` or a plain path for the
//! embedded SQLite file, `postgres://user@host:port/db` for a shared PostgreSQL.
//!
//! Why a type: the URL is recorded in `mutual-ca.toml` and shown in messages, so it must never
//! carry a password. Parsing refuses one (in the userinfo or as `?password=`); the password comes
//! from `$MUTUAL_STORE_PASSWORD`, a password file, or libpq's `PGPASSFILE`/`~/.pgpass`, which
//! sqlx reads when no password is given.
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a store URL was refused. Never echoes a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreUrlError {
    #[error(
        "the store URL must not contain a password (it is recorded in mutual-ca.toml and shown \
         in messages): remove it and use $MUTUAL_STORE_PASSWORD, --store-password-file FILE, \
         or libpq's PGPASSFILE / ~/.pgpass"
    )]
    PasswordInUrl,
    #[error("the store URL is empty")]
    Empty,
    #[error("unsupported store {scheme:?}: use sqlite:PATH, a file path, or postgres://user@host:port/db")]
    UnsupportedScheme { scheme: String },
    #[error("the PostgreSQL URL is malformed: {detail}")]
    Malformed { detail: String },
    /// `sslmode` is not one of libpq's words.
    #[error(
        "sslmode={value:?} in the store URL: use disable, allow, prefer, require, verify-ca or \
         verify-full (verify-full with sslrootcert=CA.pem checks the server's certificate and name)"
    )]
    SslMode { value: String },
}

/// libpq's `sslmode` words, as sqlx reads them from the URL (with `sslrootcert`, `sslcert`,
/// `sslkey`): TLS to PostgreSQL is configured in the store URL itself, so every replica and
/// `mutual-ca.toml` carry it.
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// A parsed, password-free store location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL without a password (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl StoreUrl {
    /// A relative SQLite path is taken relative to `base` (the CA directory), so that a CA
    /// directory can be moved with its inventory.
    pub fn relative_to(self, base: &Path) -> StoreUrl {
        match self {
            StoreUrl::Sqlite(p) if p.is_relative() => StoreUrl::Sqlite(base.join(p)),
            other => other,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreUrl::Postgres(_))
    }
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(StoreUrlError::Empty);
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            // Errors below never include the input: it may hold a password.
            let u = url::Url::parse(s).map_err(|e| StoreUrlError::Malformed {
                detail: e.to_string(),
            })?;
            if u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password") {
                return Err(StoreUrlError::PasswordInUrl);
            }
            if let Some((_, v)) = u
                .query_pairs()
                .find(|(k, _)| k == "sslmode" || k == "ssl-mode")
            {
                if !SSL_MODES.contains(&v.as_ref()) {
                    return Err(StoreUrlError::SslMode {
                        value: v.into_owned(),
                    });
                }
            }
            if u.host_str().is_none_or(str::is_empty) {
                return Err(StoreUrlError::Malformed {
                    detail: "no host (postgres://user@host:port/db)".into(),
                });
            }
            return Ok(StoreUrl::Postgres(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("sqlite:") {
            // `sqlite://PATH` too, so `sqlite:///abs/path` means /abs/path.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(StoreUrlError::Empty);
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(StoreUrlError::UnsupportedScheme {
                scheme: scheme.to_string(),
            });
        }
        Ok(StoreUrl::Sqlite(PathBuf::from(s)))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreUrl::Postgres(u) => f.write_str(u),
        }
    }
}

impl serde::Serialize for StoreUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StoreUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            "sqlite:///tmp/x.db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            "inv.db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite("inv.db".into())
        );
        assert_eq!(
            "inv.db"
                .parse::<StoreUrl>()
                .unwrap()
                .relative_to(Path::new("/ca")),
            StoreUrl::Sqlite("/ca/inv.db".into())
        );
        let pg = "postgres://mutual@db.internal:5432/ca"
            .parse::<StoreUrl>()
            .unwrap();
        assert!(pg.is_postgres());
        assert_eq!(pg.to_string(), "postgres://mutual@db.internal:5432/ca");
        for bad in [
            "postgres://mutual:s3cret@db/ca",
            "postgres://mutual@db/ca?password=s3cret",
        ] {
            let e = bad.parse::<StoreUrl>().unwrap_err();
            assert_eq!(e, StoreUrlError::PasswordInUrl, "{bad}");
            assert!(!e.to_string().contains("s3cret"));
        }
        assert!(matches!(
            "mysql://x@db/ca".parse::<StoreUrl>(),
            Err(StoreUrlError::UnsupportedScheme { .. })
        ));
        assert_eq!("".parse::<StoreUrl>(), Err(StoreUrlError::Empty));
        assert_eq!("sqlite:".parse::<StoreUrl>(), Err(StoreUrlError::Empty));
    }

    /// TLS options stay in the URL and reach sqlx's connect options unchanged.
    #[test]
    fn sslmode_in_the_url() {
        use sqlx::postgres::{PgConnectOptions, PgSslMode};
        for (mode, want) in [
            ("disable", PgSslMode::Disable),
            ("prefer", PgSslMode::Prefer),
            ("require", PgSslMode::Require),
            ("verify-ca", PgSslMode::VerifyCa),
            ("verify-full", PgSslMode::VerifyFull),
        ] {
            let s = format!("postgres://ca@db.internal/ca?sslmode={mode}&sslrootcert=/etc/ca.pem");
            let StoreUrl::Postgres(u) = s.parse::<StoreUrl>().unwrap() else {
                panic!("{s} is not a PostgreSQL URL");
            };
            assert_eq!(u, s);
            let o: PgConnectOptions = u.parse().unwrap();
            // PgSslMode has no PartialEq.
            assert_eq!(
                format!("{:?}", o.get_ssl_mode()),
                format!("{want:?}"),
                "{mode}"
            );
        }
        let e = "postgres://ca@db/ca?sslmode=verify"
            .parse::<StoreUrl>()
            .unwrap_err();
        assert_eq!(
            e,
            StoreUrlError::SslMode {
                value: "verify".into()
            }
        );
        assert!(e.to_string().contains("verify-full"), "{e}");
    }
}
