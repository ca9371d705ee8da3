//! `mutual probe`: CLI wiring for the endpoint probe and the offline `--pair` check; the work is
//! in the mutual-probe crate.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

const AFTER_HELP: &str = "\
How it works:
  The probe runs real handshakes: one without a client certificate (does the server ask for
  one, and does it let the client in without it?), one with a certificate from a throwaway CA
  it makes on the spot (does the server really verify what it asks for?), one with --cert/--key
  if given (accepted? a server that closes right after the handshake has not accepted it; if
  not, the most likely reason from the alert and a local check of the certificate), and one
  per TLS version. The server's chain is recorded whatever it is and judged separately against
  --ca (or the system roots, read with rustls-native-certs) for the server name.

Client authentication (\"client_auth\" in --json):
  required      the server refuses a client without a certificate (alert, dropped connection, or nginx's
                HTTP 400 \"No required SSL certificate was sent\") and one from an unknown CA
  not_enforced  the server refuses a client without a certificate but lets in one from an unknown CA
  optional      the server asks for a certificate but lets a client without one in
  none          the server never asks

Exit codes:
  0  the endpoint enforces mTLS (client_auth is \"required\") AND, when --cert is given, it
     accepted that certificate (with --strict, the server certificate must also verify)
  1  anything else: mTLS not enforced (not_enforced, optional, none), the certificate rejected,
     or the endpoint unreachable, not speaking TLS, resetting or timing out (a one-line message
     says which)
  2  bad usage: unreadable or malformed --cert/--key/--ca, a key that does not match its
     certificate, a bad HOST:PORT

  --pair CERT KEY exits 0 when the key matches, the chain in CERT is complete and in order, the
  leaf is valid now and (with --ca) the chain verifies to it; 1 otherwise; 2 for unreadable files.

Examples:
  mutual probe api.internal:8443 --ca root.pem
  mutual probe api.internal:8443 --ca root.pem --cert client.pem --key client.key --json
  mutual probe --pair server.pem server.key --ca root.pem";

#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct ProbeArgs {
    /// The endpoint, HOST:PORT ([v6]:PORT for IPv6 literals), or https://HOST[:PORT][/...] as
    /// pasted from curl (port 443 by default; the path is ignored).
    #[arg(required_unless_present = "pair", value_name = "HOST:PORT")]
    target: Option<String>,
    /// Name to send as SNI and to verify the server certificate against (default: HOST).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// PEM bundle of roots to verify the server certificate (with --pair: to verify CERT's chain).
    /// Default: the system roots.
    #[arg(long, value_name = "ROOTS")]
    ca: Option<PathBuf>,
    /// Client certificate chain (PEM) to present in the second handshake.
    #[arg(long, requires = "key", value_name = "CERT")]
    cert: Option<PathBuf>,
    /// Private key (PEM, unencrypted) for --cert.
    #[arg(long, requires = "cert", value_name = "KEY")]
    key: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Bound for each connection (connect, handshake and the short watch after it): 5s, 500ms, 1m.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Do not offer ALPN http/1.1 nor send an HTTP request (by default, when the server picks
    /// http/1.1, one GET / reveals servers such as nginx that refuse a client without a
    /// certificate at the HTTP level).
    #[arg(long)]
    no_http: bool,
    /// Fail (exit 1) when the server certificate does not verify, too.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    profile: crate::cmd_verify::ProfileArg,
    /// Offline: check that KEY matches CERT and that the chain in CERT is complete and ordered
    /// (with --ca: that it chains to those roots). Takes only --ca and --json.
    #[arg(
        long,
        num_args = 2,
        value_names = ["CERT", "KEY"],
        conflicts_with_all = ["target", "cert", "key", "server_name", "no_http", "strict",
            "timeout", "profile"]
    )]
    pair: Option<Vec<PathBuf>>,
}

/// The binary's one duration grammar (`5s`, `500ms`, `2m`, a bare number of seconds), between
/// 1 ms and 1 h.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: mutual_policy::human::HumanDuration = s.parse().map_err(|e| format!("{e}"))?;
    d.within(s, Duration::from_millis(1), Duration::from_secs(3600))
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    if let Some(pair) = &args.pair {
        let [cert, key] = pair.as_slice() else {
            anyhow::bail!("--pair takes CERT and KEY");
        };
        let r = mutual_probe::check_pair(cert, key, args.ca.as_deref())
            .context("mutual probe --pair")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            print!("{}", mutual_probe::render::pair(&r));
        }
        return Ok(ExitCode::from(r.exit_code()));
    }
    let target = args
        .target
        .clone()
        .context("HOST:PORT is required (or --pair CERT KEY)")?;
    let opts = mutual_probe::ProbeOptions {
        target,
        server_name: args.server_name.clone(),
        ca: args.ca.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
        timeout: args.timeout,
        http: !args.no_http,
        strict: args.strict,
        profile: args.profile.profile,
    };
    let r = mutual_probe::probe(&opts).context("mutual probe")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", mutual_probe::render::report(&r));
    }
    Ok(ExitCode::from(r.exit_code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
