//! The docs' commands run as written. Every shell block (```sh, ```shell, ```bash, ```console, and
//! a bare ``` block that is a transcript, i.e. starts with `$ `) of README.md and of every
//! docs/*.md is either run, in order, in a fresh directory per file with the real binary on PATH
//! as `mutual`, or listed in [`SKIPPED`] with the reason it cannot run here (an outside peer or
//! host name, a transcript against a test server, the build itself). A server a page starts
//! (`serve`, `connect`, `ca serve`) is listed in [`BACKGROUND`]: it runs as written but on free
//! ports, until a readiness check passes, then it is stopped. Pages whose examples name hosts
//! (ca.internal, api.internal) and fixed ports run in a network namespace of their own ([`NETNS`])
//! where those names are 127.0.0.1 and the servers they talk to are started. A new block that is neither runnable
//! nor listed fails this test, and so does a listed block that no longer exists. A second test
//! feeds the TOML examples of docs/config.md, docs/policy.md and docs/http.md to `mutual config
//! check` and the policy parser, since users copy them.
//!
//! Conventions the docs follow so that a block is checkable as written:
//! - a command that is meant to fail ends with a comment `# exit N: why`; it must exit N;
//! - every other command must exit 0 (the blocks run under `set -e -o pipefail`);
//! - in a console block or transcript, only the lines starting with `$ ` are commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Fenced-block languages whose contents are shell commands.
const SHELL_LANGS: &[&str] = &["sh", "shell", "bash", "console"];

/// Blocks that are not run, by file and first line, each with the reason.
const SKIPPED: &[(&str, &str, &str)] = &[
    (
        "docs/operations.md",
        "cat /sys/devices/system/cpu/cpuidle/current_driver      # haltpoll: a KVM guest that can poll",
        "reads a KVM guest's cpuidle settings: on a machine that is not one (or has no cpuidle \
         driver) the files do not exist; nothing of mutual's is run",
    ),
    (
        "docs/ocsp.md",
        "mutual ca rotate-intermediate",
        "asks the responder started two blocks above, on fixed ports; tests/ocsp_issuers.rs \
         runs these openssl ocsp calls after a rotation on free ports",
    ),
    (
        "docs/conformance.md",
        "python3 conformance/harness/openssl.py  limbo.json /tmp/openssl.json    # ~5 min (one process per case)",
        "needs the x509-limbo suite (limbo.json, 10 MB, kept beside the repo in ../shared, not \
         committed), takes about 10 minutes and fetches cryptography from PyPI; the figures it \
         produced are in conformance/harness/results-2026-12-05.txt",
    ),
    (
        "docs/ocsp.md",
        "mutual ca serve --listen 127.0.0.1:9443 --ocsp-listen 127.0.0.1:8080",
        "a server on fixed ports; tests/ocsp.rs starts `ca serve --ocsp-listen` on free ports",
    ),
    (
        "docs/ocsp.md",
        "openssl ocsp -issuer ca/intermediate.pem -cert certs/api.pem \\",
        "asks the responder the previous block starts; tests/ocsp.rs runs these openssl ocsp \
         commands (good, revoked with reason, unknown) against it on a free port",
    ),
    (
        "docs/ocsp.md",
        "mutual serve --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        "serves until stopped and staples from the responder above; tests/ocsp.rs runs `serve \
         --ocsp-staple` and reads the staple with `openssl s_client -status`",
    ),
    (
        "docs/ocsp.md",
        "mutual serve --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 --ocsp-from-aia \\",
        "serves until stopped, then a connect to api.internal, both asking the responder above; \
         tests/ocsp_peers.rs runs `serve --ocsp-from-aia` and `connect --ocsp` on free ports",
    ),
    (
        "docs/console.md",
        "mutual ca serve --listen 0.0.0.0:9443 --admin 'spiffe://example.org/ops/*'",
        "a server on a fixed public port, used from a browser; tests/console.rs starts `ca serve \
         --admin` on a free port and drives a real Chromium against it",
    ),
    (
        "docs/console.md",
        "mutual ca serve --ui-listen 127.0.0.1:9444",
        "a server plus an SSH tunnel to a named host; tests/console.rs runs `--ui-listen` on a \
         free loopback port",
    ),
    (
        "docs/console.md",
        "mutual ca serve --listen 0.0.0.0:9443 --admin 'spiffe://example.org/ops/*' --est --est-approval manual",
        "a server on a fixed public port, decided in a browser; tests/console.rs starts `ca serve \
         --est --est-approval manual` on a free port, holds two curl devices and approves and \
         rejects them in a real Chromium",
    ),
    (
        "docs/console.md",
        "mutual enroll --ca-url https://CA-HOST:9443 --root-sha256 ROOT-FINGERPRINT --token TOKEN --out certs/",
        "placeholders for the CA's host, fingerprint and a token shown in the browser; \
         tests/console.rs enrolls with the token the browser created",
    ),
    (
        "docs/est.md",
        "mutual ca init --dir /srv/ca --trust-domain fleet.example",
        "a CA dir under /srv and a server on a public port with a manufacturer CA file; tests/est.rs starts `ca serve --est --est-bootstrap-ca --est-identity` on a free port",
    ),
    (
        "docs/est.md",
        "# at the factory: the device's key and its factory certificate",
        "needs the manufacturer's CA key (acme-manufacturing-ca.key), which the page does not make; tests/est.rs makes a manufacturer CA and factory certificates with these openssl commands",
    ),
    (
        "docs/est.md",
        "mutual enroll --est https://ca.fleet.example:9443 \\",
        "a device enrolling from the CA server at ca.fleet.example with a factory certificate; \
         tests/est.rs runs `mutual enroll --est` and `mutual renew --est [--daemon]` against \
         `ca serve --est` on 127.0.0.1 with a free port",
    ),
    (
        "docs/est.md",
        "mutual cert pending --dir /srv/ca              # ID, status, when, who (est:bootstrap:SN0001), names",
        "request ids of a CA at /srv/ca that devices made over EST; tests/est.rs holds requests with \
         `--est-approval manual` and runs cert pending, approve and reject",
    ),
    (
        "docs/est.md",
        "EST=https://ca.fleet.example:9443/.well-known/est",
        "a device recipe against the CA server at ca.fleet.example; tests/est.rs runs these curl + openssl steps against `ca serve --est` on 127.0.0.1 with a free port",
    ),
    (
        "docs/est.md",
        "curl -sf --cacert root.pem -u \"device:$TOKEN\" \\",
        "a device recipe against the CA server at ca.fleet.example; tests/est.rs runs these curl + openssl steps against `ca serve --est` on 127.0.0.1 with a free port",
    ),
    (
        "docs/est.md",
        "# on the device: a new key, authenticated by the current certificate",
        "a device recipe against the CA server at ca.fleet.example; tests/est.rs runs these curl + openssl steps against `ca serve --est` on 127.0.0.1 with a free port",
    ),
    (
        "docs/est.md",
        "# any throwaway CSR: only its names (if any) are read",
        "a device recipe against the CA server at ca.fleet.example; tests/est.rs \
         (serverkeygen_sends_the_key_and_keeps_none) runs curl, Python's email module and openssl \
         against `ca serve --est` on 127.0.0.1 with a free port",
    ),
    (
        "docs/est.md",
        "mutual cert list --dir /srv/ca --san uri:spiffe://fleet.example/device/SN0001",
        "the CA dir of step 1 and a SERIAL placeholder; tests/est.rs revokes an enrolled device and checks that it cannot re-enroll",
    ),
    (
        "docs/acme.md",
        "mutual ca serve --dir /etc/mutual/ca --listen 0.0.0.0:9443 \\",
        "a server on a public port with a CA dir made by `ca init`; tests/acme.rs starts `ca serve \
         --acme` on a free port and runs certbot against it",
    ),
    (
        "docs/acme.md",
        "export REQUESTS_CA_BUNDLE=/etc/mutual/ca/root.pem",
        "certbot against a named host and the standard http-01 port 80; tests/acme.rs runs these \
         certbot commands (obtain, forced renew, revoke) against 127.0.0.1 with a free port",
    ),
    (
        "docs/acme.md",
        "mutual acme eab create --dir /etc/mutual/ca            # kid=... and hmac_key=..., shown once",
        "needs the CA dir made by `ca init` in /etc/mutual/ca and a KID; tests/acme.rs runs `mutual \
         acme eab create --json`, binds accounts (Python client, certbot) with its output, lists \
         the keys and deletes one (its account is then refused) and an unused one",
    ),
    (
        "docs/acme.md",
        "LEGO_CA_CERTIFICATES=/etc/mutual/ca/root.pem lego \\",
        "lego against a named host on port 80; tests/acme.rs runs lego (http-01, tls-alpn-01, renew, \
         revoke) against 127.0.0.1 with free ports",
    ),
    (
        "README.md",
        "cargo run --release -p mutual -- demo   # the tour: CA, certificates, proxy, allowed and denied requests",
        "builds the workspace in release mode and runs the whole test suite: that is CI itself",
    ),
    (
        "README.md",
        "mutual run --config mutual.toml    # serve + connect listeners, one metrics endpoint, one audit log",
        "serves until stopped on the fixed public ports of its file; tests/proxy_config.rs runs `mutual run`",
    ),
    (
        "README.md",
        "mutual renew --ca-url https://ca.internal.example:9443 \\",
        "a daemon: it runs until stopped and renews at two-thirds of a 24 h lifetime; \
         tests/enroll.rs runs it with short lifetimes",
    ),
    (
        "README.md",
        "tests/soak.sh --runs 5            # the whole suite 5 times back to back",
        "runs the whole test suite several times (tens of minutes): it is the soak, not a doc check",
    ),
    (
        "docs/PERFORMANCE.md",
        "bench/run.sh              # the full run: about 10 minutes on 2 cores, plus the release build",
        "the benchmark: a release build and minutes of load against nginx, HAProxy and stunnel",
    ),
    (
        "docs/config.md",
        "mutual run --config mutual.toml      # start all listeners; reload on change or SIGHUP",
        "serves until stopped on fixed public ports; tests/proxy_config.rs runs `mutual run`",
    ),
    (
        "docs/config.md",
        "$ mutual config check mutual.toml",
        "a transcript; its first half is compared with the real output by toml_examples_are_accepted, \
         its broken.toml is not shown (tests/proxy_config.rs checks those errors)",
    ),
    (
        "docs/conformance.md",
        "MUTUAL_LIMBO=/path/to/limbo.json \\",
        "needs the x509-limbo corpus (outside the repo, path is a placeholder) and builds another test",
    ),
    (
        "docs/conformance.md",
        "MUTUAL_LIMBO=/path/to/limbo.json cargo test -p mutual --test limbo_cli -- --nocapture",
        "needs the x509-limbo corpus (outside the repo, path is a placeholder) and builds another test",
    ),
    (
        "docs/enrollment.md",
        "mutual renew --ca-url https://ca.internal:9443 --cert cert.pem --key key.pem --daemon",
        "a daemon: it runs until stopped and renews at two-thirds of a 24 h lifetime; \
         tests/enroll.rs runs it with short lifetimes",
    ),
    (
        "docs/migrate-ghostunnel.md",
        "# before",
        "ghostunnel is not installed here (no Debian package); the `after` blocks run",
    ),
    (
        "docs/troubleshooting.md",
        "$ mutual probe --pair billing.pem billing.key --ca root.pem",
        "an offline transcript whose files (billing.pem under an intermediate, a stranger's key) \
         the page does not make; the --pair block above runs; tests/probe.rs checks --pair",
    ),
    (
        "docs/probe.md",
        "mutual probe api.internal:8443 --ca ca/root.pem                                # required / optional / none?",
        "also probes 10.0.0.5, a private address no test may target; its api.internal lines run in \
         README.md; tests/probe.rs probes real servers",
    ),
    (
        "docs/proxy.md",
        "cp new-server.pem /etc/mutual/server.pem.tmp && mv /etc/mutual/server.pem.tmp /etc/mutual/server.pem",
        "signals the running `mutual` processes of the machine; tests/proxy_rotation.rs rotates",
    ),
    (
        "docs/proxy.md",
        "mutual serve ... --ca root.pem --crl-from-cdp \\",
        "`...` stands for the rest of a serve command line; tests/proxy_edge.rs runs --crl-from-cdp",
    ),
    (
        "README.md",
        "packaging/deb.sh && sudo dpkg -i target/deb/mutual_*.deb        # binary, man pages, completions, units",
        "installs a package and enables services on the machine; tests/deploy.rs builds the .deb, \
         installs, checks and purges it, and runs promtool on the rules",
    ),
    (
        "docs/operations.md",
        "cp deploy/prometheus/mutual-alerts.yml /etc/prometheus/",
        "writes into a Prometheus installation; tests/deploy.rs runs `promtool check rules` and \
         `promtool test rules` on deploy/prometheus/",
    ),
    (
        "docs/operations.md",
        "cargo build --release -p mutual",
        "a release build and dpkg -i on the machine; tests/deploy.rs builds the .deb from the test \
         binary with packaging/deb.sh and installs, checks and purges it",
    ),
    (
        "docs/operations.md",
        "# the CA",
        "systemctl on a machine booted with systemd; tests/deploy.rs checks the units with \
         systemd-analyze verify and security",
    ),
    (
        "docs/operations.md",
        "# an image (deploy/kubernetes/Dockerfile: Debian slim + the binary)",
        "docker and kubectl against a cluster; tests/deploy.rs parses the manifests and checks \
         their flags against the binary",
    ),
];

/// Transcripts of docs/troubleshooting.md: each was taken against a server set up for it
/// (openssl s_server, mutual serve, a plain HTTP server) on a fixed port; tests/probe.rs and
/// tests/defects_probe.rs assert the same reasons against the same kinds of servers.
const TRANSCRIPTS: &[&str] = &[
    "$ mutual probe 127.0.0.1:8443 --server-name api.internal --ca root.pem --cert billing.pem --key billing.key",
    "$ mutual probe 127.0.0.1:8443 --server-name api.internal --ca root.pem",
    "$ mutual probe 127.0.0.1:8444 --server-name api.internal --ca root.pem",
    "$ mutual probe 127.0.0.1:8443 --server-name api.internal --ca root.pem --cert stranger.pem --key stranger.key",
    "$ mutual probe 127.0.0.1:8443 --server-name api.internal",
    "$ mutual probe 127.0.0.1:8443 --server-name api.internal --ca root.pem --cert billing-old.pem --key billing-old.key",
    "$ mutual probe 127.0.0.1:8443 --server-name api.internal --ca root.pem --cert webonly.pem --key webonly.key",
    "$ mutual probe 127.0.0.1:8443 --server-name db.internal --ca root.pem",
    "$ mutual probe 127.0.0.1:8445 --timeout 1s      # a server that accepts and never answers",
    "$ mutual probe 127.0.0.1:8080",
    "$ mutual probe 127.0.0.1:8081",
];

/// Text replaced before running, and why.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    // The binary under test is on PATH already; `cargo run` would rebuild it in release mode.
    ("cargo run --release -p mutual -- ", "mutual "),
    // The placeholders of README and docs/enrollment.md for the root fingerprint the CA operator
    // hands out; their BEFORE setup computes the real one (`openssl x509 -fingerprint -sha256`).
    ("3A:5F:...:C2", "$ROOT_SHA256"),
    ("C4:18:...:30", "$ROOT_SHA256"),
];

/// The operator's absolute directories the docs write to: rebased under `$R` (a directory in the
/// test's temp dir, created with these subdirectories) so that the block runs without root and
/// without touching the machine.
const REBASED: &[&str] = &[
    "/srv/",
    "/etc/mutual",
    "/var/lib/mutual",
    "/var/log/mutual",
    "/run/secrets",
];

/// Setup every file's script gets: a background server dies with the script, whatever ends it;
/// `$R` for [`REBASED`] paths.
const COMMON_PRELUDE: &str = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\ntrap 'exit 98' TERM INT\n\
     R=$PWD/root; mkdir -p $R/srv/www $R/etc/mutual $R/var/lib/mutual $R/var/log/mutual $R/run/secrets\n";

/// A reader of these pages has a CA already: `MUTUAL_HOME` set, as the README's tour does.
const CA_PRELUDE: &str =
    "export MUTUAL_HOME=$PWD/ca MUTUAL_CA_PASSWORD='change me'\nmutual ca init >/dev/null\n";

/// docs/config.md's example config with the certificate and policy files it names.
const CONFIG_EXAMPLE: &str =
    "mutual cert issue api --server --san dns:api.internal --out certs >/dev/null\n\
     mutual cert issue client --client --san uri:spiffe://example.org/c --out certs >/dev/null\n\
     cp ca/root.pem certs/root.pem\nmutual ca crl --out certs/intermediate.crl >/dev/null\n\
     printf '[[allow]]\\ndns = \"*.ops.example.org\"\\n' >admin-policy.toml\n\
     awk '/^```toml/{f=1;next} /^```/{f=0} f' \"$DOCS_REPO/docs/config.md\" >mutual.toml\n";

/// Setup one block assumes and its page does not show, by file and first line (run just before it).
const BEFORE: &[(&str, &str, &[&str])] = &[
    (
        "README.md",
        "mutual config check mutual.toml    # every error as FILE:LINE:COL, exit 2; or a summary, exit 0",
        &[CONFIG_EXAMPLE],
    ),
    // The fingerprint README's placeholder stands for, of the root its `ca serve` uses.
    (
        "README.md",
        "mutual enroll --ca-url https://ca.internal.example:9443 --token \"$TOKEN\" \\",
        &["ROOT_SHA256=$(openssl x509 -in $R/srv/ca/root.pem -noout -fingerprint -sha256 | cut -d= -f2)\n"],
    ),
    ("docs/enrollment.md", "mutual enroll --ca-url https://ca.internal:9443 --token \"$TOKEN\" \\", &[ENROLLMENT_CA]),
    // The proxy enrolls at its first start: a token of its own (the first one was used).
    (
        "docs/enrollment.md",
        "mutual serve --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        &["TOKEN=$(mutual token create --san dns:api.internal --san uri:spiffe://example.org/ns/prod/api)\n"],
    ),
    // The server README's connect example reaches (it serves the probe examples too).
    (
        "README.md",
        "mutual connect --listen 127.0.0.1:7000 --remote api.internal:8443 \\",
        &[PROBE_TARGET],
    ),
    (
        "docs/proxy.md",
        "mutual connect --listen 127.0.0.1:7000 --remote api.internal:8443 \\",
        &[
            PROBE_TARGET,
            "mutual cert issue client --client --san uri:spiffe://example.org/client >/dev/null\n",
        ],
    ),
    // The client certificate README's probe examples use (api.internal is up since connect).
    (
        "README.md",
        "mutual probe api.internal:8443 --ca ca/root.pem                                # mTLS enforced? required / not_enforced / optional / none",
        &["mutual cert issue me --client --san uri:spiffe://example.org/me >/dev/null\n"],
    ),
    // The root the operator hands out, beside the client.
    (
        "docs/ca-server.md",
        "curl -s --cacert root.pem https://ca.internal.example:9443/v1/crl -o crl.der",
        &["cp $R/srv/ca/root.pem root.pem\n"],
    ),
    // The endpoint the page probes, and the client certificate it probes with.
    (
        "docs/troubleshooting.md",
        "# Does the endpoint enforce mTLS? (no client certificate needed)",
        &[
            PROBE_TARGET,
            "mutual cert issue billing --client --san uri:spiffe://example.org/billing >/dev/null\n",
        ],
    ),
];

/// Setup a file's blocks assume and the file does not show.
const PRELUDES: &[(&str, &[&str])] = &[
    ("docs/migrate-nginx.md", &[CA_PRELUDE]),
    ("docs/migrate-ghostunnel.md", &[CA_PRELUDE]),
    ("docs/enrollment.md", &[CA_PRELUDE]),
    // The serve example's certificate, key and CA bundle.
    ("docs/proxy.md", &[CA_PRELUDE, SERVER_CERT]),
    // The serve example's files; its policy.toml is the one the page shows.
    (
        "docs/http.md",
        &[
            CA_PRELUDE,
            SERVER_CERT,
            "awk '/^```toml/{f=1;next} /^```/{f=0} f' \"$DOCS_REPO/docs/http.md\" >policy.toml\n",
        ],
    ),
    // `config check mutual.toml` checks the example the page shows, with the files it names.
    ("docs/config.md", &[CA_PRELUDE, CONFIG_EXAMPLE]),
    // `ca init --dir /srv/ca` reads the password from the environment instead of a prompt, and
    // `ca serve` from its --password-file.
    (
        "docs/ca-server.md",
        &["export MUTUAL_CA_PASSWORD='change me'\nprintf 'change me' >$R/run/secrets/ca-password\n"],
    ),
    // The page's examples use a server certificate for api.internal and the root beside it.
    ("docs/troubleshooting.md", &[CA_PRELUDE, SERVER_CERT]),
];

/// A server certificate for api.internal (server.pem, server.key) and root.pem beside it.
const SERVER_CERT: &str =
    "mutual cert issue server --server --san dns:api.internal >/dev/null\ncp ca/root.pem root.pem\n";

/// (file, first command line, ports, readiness check, setup, [`KEEP`] or [`STOP`]).
type Server = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
    bool,
);

/// Servers the docs start, run in the background as written except for their fixed ports (each
/// `:PORT` becomes a free ephemeral port, `$PORT_<PORT>` in the readiness check), by file and first
/// command line, with the ports, a check that passes once the server serves (polled, bounded; then the
/// server is stopped) and the setup the page assumes before it (files it names and does not
/// make). A server that exits or never passes its check fails the test.
const BACKGROUND: &[Server] = &[
    (
        // docs/keys.md: ca serve with its own TLS key in the token; ready once a handshake
        // signed by the token key lets curl fetch /health.
        "docs/keys.md",
        "mutual ca serve --dir ca --listen 127.0.0.1:9443 \\",
        &["9443"],
        "curl -sf --cacert ca/root.pem https://localhost:$PORT_9443/health",
        "",
        STOP,
    ),
    (
        // docs/keys.md: serve with its TLS key in the SoftHSM2 token the page made; ready once
        // it serves a handshake signed by the token and /readyz counts the key as up.
        "docs/keys.md",
        "mutual serve --listen 127.0.0.1:8443 --backend 127.0.0.1:8080 \\",
        &["8443", "9090"],
        "mutual probe 127.0.0.1:$PORT_8443 --server-name localhost --ca ca/root.pem && \
         curl -sf http://127.0.0.1:$PORT_9090/readyz",
        "",
        STOP,
    ),
    (
        // After the tour: its CA (MUTUAL_HOME) and crl.pem; a server certificate and a policy.
        "README.md",
        "mutual serve --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        &["8443", "9090"],
        "mutual probe 127.0.0.1:$PORT_8443 --server-name api.internal --ca ca/root.pem && \
         curl -sf http://127.0.0.1:$PORT_9090/readyz",
        "mutual cert issue server --server --san dns:api.internal >/dev/null\n\
         printf '[[allow]]\\ndns = \"*.ops.example.org\"\\n' >policy.toml",
        STOP,
    ),
    (
        "README.md",
        "mutual serve --http --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        &["8443"],
        "mutual probe 127.0.0.1:$PORT_8443 --server-name api.internal --ca ca/root.pem",
        "",
        STOP,
    ),
    (
        // In README's network namespace, as written; it serves the enroll example below.
        "README.md",
        "mutual ca serve --dir /srv/ca --listen 0.0.0.0:9443 --san dns:ca.internal.example \\",
        &[],
        "curl -sf --cacert $R/srv/ca/root.pem https://ca.internal.example:9443/health",
        "mutual ca init --dir $R/srv/ca >/dev/null\nprintf '%s' \"$MUTUAL_CA_PASSWORD\" >$R/run/secrets/ca-password",
        KEEP,
    ),
    (
        // In its own network namespace (see NETNS): its port and host name as written; it keeps
        // serving the page's curl examples until the script ends.
        "docs/ca-server.md",
        "mutual ca serve --dir /srv/ca --listen 0.0.0.0:9443 \\",
        &[],
        "curl -sf --cacert $R/srv/ca/root.pem https://ca.internal.example:9443/health",
        "",
        KEEP,
    ),
    (
        // In the page's network namespace, as written: it enrolls from the CA at ca.internal,
        // then serves with the certificate it got.
        "docs/enrollment.md",
        "mutual serve --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        &[],
        "mutual probe 127.0.0.1:8443 --server-name api.internal --ca ca/root.pem",
        "",
        STOP,
    ),
    (
        // In the page's network namespace, as written, in front of api.internal:8443 (BEFORE);
        // the page's curl then goes through it.
        "README.md",
        "mutual connect --listen 127.0.0.1:7000 --remote api.internal:8443 \\",
        &[],
        "exec 3<>/dev/tcp/127.0.0.1/7000",
        "",
        KEEP,
    ),
    (
        "docs/proxy.md",
        "mutual connect --listen 127.0.0.1:7000 --remote api.internal:8443 \\",
        &[],
        "exec 3<>/dev/tcp/127.0.0.1/7000",
        "",
        KEEP,
    ),
    (
        // Ready means: the probe sees mTLS enforced (exit 0) with the page's certificates.
        "docs/http.md",
        "mutual serve --http --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        &["8443", "9090"],
        "mutual probe 127.0.0.1:$PORT_8443 --server-name api.internal --ca root.pem && \
         curl -sf http://127.0.0.1:$PORT_9090/readyz",
        "",
        STOP,
    ),
    (
        // Files the page's ghostunnel setup had, in mutual's form.
        "docs/migrate-ghostunnel.md",
        "mutual serve --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        &["8443", "6060"],
        "mutual probe 127.0.0.1:$PORT_8443 --server-name api.internal --ca root.pem && \
         curl -sf http://127.0.0.1:$PORT_6060/readyz",
        "mutual cert issue server --server --san dns:api.internal >/dev/null\ncp ca/root.pem root.pem\n\
         mutual cert issue client --client --san uri:spiffe://example.org/ns/prod/sa/web >/dev/null",
        STOP,
    ),
    (
        // Ready: it listens (it dials api.internal only when a client connects).
        "docs/migrate-ghostunnel.md",
        "mutual connect --listen 127.0.0.1:7000 --remote api.internal:8443 \\",
        &["7000"],
        "exec 3<>/dev/tcp/127.0.0.1/$PORT_7000",
        "",
        STOP,
    ),
    (
        // The files the page's nginx had, under /etc/mutual; chain.crl.pem from the block above.
        "docs/migrate-nginx.md",
        "mutual serve --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        &["8443", "9090"],
        "mutual probe 127.0.0.1:$PORT_8443 --server-name api.internal --ca ca/root.pem && \
         curl -sf http://127.0.0.1:$PORT_9090/readyz",
        "mutual cert issue server --server --san dns:api.internal --out $R/etc/mutual >/dev/null\n\
         cp ca/root.pem chain.crl.pem $R/etc/mutual/",
        STOP,
    ),
    (
        "docs/proxy.md",
        "mutual serve --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        &["8443", "9090"],
        "mutual probe 127.0.0.1:$PORT_8443 --server-name api.internal --ca root.pem && \
         curl -sf http://127.0.0.1:$PORT_9090/readyz && test -f $R/var/log/mutual/audit.log",
        "",
        STOP,
    ),
];

/// [`BACKGROUND`]: stop the server once it is ready, or keep it until the file's script ends.
const STOP: bool = false;
const KEEP: bool = true;

/// Files whose script runs in a network namespace of its own (`unshare -n -m`: its own loopback,
/// its own /etc/hosts naming these hosts 127.0.0.1), so that their servers and clients use the
/// fixed ports and host names as written without meeting anything else on the machine.
const NETNS: &[(&str, &[&str])] = &[
    ("README.md", &["ca.internal.example", "api.internal"]),
    ("docs/troubleshooting.md", &["api.internal"]),
    ("docs/proxy.md", &["api.internal"]),
    ("docs/ca-server.md", &["ca.internal.example"]),
    ("docs/enrollment.md", &["ca.internal"]),
];

/// The endpoint the probe examples examine, api.internal:8443 (in the page's network namespace):
/// `mutual serve` with a certificate for that name from the page's CA, in front of a plain HTTP
/// backend, allowing any client of that CA (the page's own client certificate is then accepted).
const PROBE_TARGET: &str = "mutual cert issue api --server --san dns:api.internal >/dev/null\n\
     python3 -m http.server 8080 --bind 127.0.0.1 >backend.log 2>&1 &\n\
     mutual serve --listen 127.0.0.1:8443 --backend 127.0.0.1:8080 --cert api.pem --key api.key \
     --ca ca/root.pem --allow-any >api.log 2>&1 &\n\
     for __i in $(seq 1 300); do mutual probe api.internal:8443 --ca ca/root.pem >/dev/null 2>&1 && \
     curl -s -o /dev/null http://127.0.0.1:8080/ && break; \
     [ $__i = 300 ] && { cat api.log backend.log >&2; exit 97; }; sleep 0.1; done\n";

/// docs/enrollment.md's CA host, which the page assumes: `ca serve` at ca.internal:9443 (in the
/// page's network namespace), the token the page's `token create` prints, and the fingerprint.
const ENROLLMENT_CA: &str = "mutual ca serve --listen 0.0.0.0:9443 --san dns:ca.internal >ca-serve.log 2>&1 &\n\
     for __i in $(seq 1 300); do curl -sf --cacert ca/root.pem https://ca.internal:9443/health >/dev/null && break; \
     [ $__i = 300 ] && { cat ca-serve.log >&2; exit 97; }; sleep 0.1; done\n\
     TOKEN=$(mutual token create --san dns:web.internal --san uri:spiffe://example.org/web --ttl-cert 24h)\n\
     ROOT_SHA256=$(openssl x509 -in ca/root.pem -noout -fingerprint -sha256 | cut -d= -f2)\n";

/// Checks run right after a block, by file and first line: what the block's own commands cannot
/// show (`curl -s` exits 0 on an error status; the check proves the result is what the page says).
const AFTER: &[(&str, &str, &str)] = &[(
    "docs/ca-server.md",
    "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout web.key \\",
    "openssl x509 -in web.pem -noout -ext subjectAltName | grep -q DNS:web.internal.example\n",
)];

/// Why the transcripts in [`TRANSCRIPTS`] are not run.
const TRANSCRIPT_REASON: &str =
    "a transcript taken against a test server on a fixed port (openssl \
     s_server, mutual serve, plain HTTP); tests/probe.rs and tests/defects_probe.rs assert these \
     reasons against the same kinds of servers";

struct Block {
    file: String,
    /// 1-based line of the first command line.
    line: usize,
    /// In a console block or transcript only `$ ` lines (and their continuations) are commands.
    console: bool,
    lines: Vec<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md, then every docs/*.md in name order.
fn doc_files() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    let mut files = vec!["README.md".to_string()];
    files.extend(docs);
    files
}

/// Every fenced block, as (language, 1-based line of its first content line, lines).
fn fenced(file: &str) -> Vec<(String, usize, Vec<String>)> {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let mut out = Vec::new();
    let mut cur: Option<(String, usize, Vec<String>)> = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_end();
        match &mut cur {
            None => {
                if let Some(lang) = t.strip_prefix("```") {
                    cur = Some((lang.trim().to_string(), i + 2, Vec::new()));
                }
            }
            Some(_) if t == "```" => out.push(cur.take().unwrap()),
            Some((_, _, lines)) => lines.push(l.to_string()),
        }
    }
    assert!(cur.is_none(), "{file}: unterminated fenced block");
    out
}

/// The shell blocks of a file: the shell languages, and bare blocks that are transcripts.
fn blocks(file: &str) -> Vec<Block> {
    fenced(file)
        .into_iter()
        .filter_map(|(lang, line, lines)| {
            let transcript = lang.is_empty()
                && lines
                    .iter()
                    .find(|l| !l.trim().is_empty())
                    .is_some_and(|l| l.starts_with("$ "));
            (SHELL_LANGS.contains(&lang.as_str()) || transcript).then(|| Block {
                file: file.to_string(),
                line,
                console: lang == "console" || transcript,
                lines,
            })
        })
        .collect()
}

fn first_line(b: &Block) -> &str {
    b.lines
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(String::as_str)
        .unwrap_or("")
}

/// The first line that is not a comment: what [`BACKGROUND`] names a block by.
fn first_command(b: &Block) -> &str {
    b.lines
        .iter()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(String::as_str)
        .unwrap_or("")
}

/// [`SKIPPED`] and the transcripts, as (file, first line, reason).
fn skipped() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut all = SKIPPED.to_vec();
    all.extend(
        TRANSCRIPTS
            .iter()
            .map(|first| ("docs/troubleshooting.md", *first, TRANSCRIPT_REASON)),
    );
    all
}

/// `CMD   # exit N: why` -> (CMD, N).
fn expected_exit(cmd: &str) -> (String, Option<i32>) {
    if let Some(i) = cmd.rfind("# exit ") {
        let n: String = cmd[i + 7..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = n.parse() {
            return (cmd[..i].trim_end().to_string(), Some(n));
        }
    }
    (cmd.to_string(), None)
}

/// Absolute operator paths ([`REBASED`]) moved under `$R`, where they start a word.
fn rebase(line: &str) -> String {
    let mut out = line.to_string();
    for prefix in REBASED {
        let mut res = String::new();
        let mut rest = out.as_str();
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            res.push_str(&rest[..i]);
            if matches!(before, None | Some(' ' | '=' | '\'' | '"' | '\t')) {
                res.push_str("$R");
            }
            res.push_str(prefix);
            rest = &rest[i + prefix.len()..];
        }
        res.push_str(rest);
        out = res;
    }
    out
}

/// The block as bash: continuation lines joined, each command that must fail wrapped so that it
/// must fail with exactly its documented code.
fn script(b: &Block) -> String {
    let mut s = format!("echo '>>> {}:{}' >&2\n", b.file, b.line);
    let mut logical = String::new();
    let mut start = b.line;
    for (k, l) in b.lines.iter().enumerate() {
        let mut l = l.clone();
        if logical.is_empty() {
            start = b.line + k;
            if b.console {
                // Output lines of a transcript are not commands.
                match l.strip_prefix("$ ") {
                    Some(cmd) => l = cmd.to_string(),
                    None => continue,
                }
            }
        }
        for (from, to) in SUBSTITUTIONS {
            l = l.replace(from, to);
        }
        let l = rebase(&l);
        if let Some(cont) = l.strip_suffix('\\') {
            logical.push_str(cont);
            continue;
        }
        logical.push_str(&l);
        let (cmd, exit) = expected_exit(&logical);
        match exit {
            Some(n) => s.push_str(&format!(
                "if {cmd}; then __rc=0; else __rc=$?; fi\n\
                 [ \"$__rc\" = {n} ] || {{ echo '{f}:{start}: expected exit {n}, got '\"$__rc\" >&2; exit 99; }}\n",
                f = b.file
            )),
            None => {
                s.push_str(&cmd);
                s.push('\n');
            }
        }
        logical.clear();
    }
    s
}

/// A server block: started in the background with its fixed ports swapped for `$PORT_<PORT>`,
/// polled with `ready` (at most ~30 s, so a busy machine is not a failure), then stopped.
fn background_script(b: &Block, ports: &[&str], ready: &str, keep: bool) -> String {
    let mut swapped = Block {
        file: b.file.clone(),
        line: b.line,
        console: b.console,
        lines: b.lines.clone(),
    };
    for l in &mut swapped.lines {
        for p in ports {
            *l = l.replace(&format!(":{p}"), &format!(":$PORT_{p}"));
        }
    }
    let run = script(&swapped);
    let (marker, cmd) = run.split_once('\n').unwrap();
    let cmd = cmd
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        // A trailing `# comment` would swallow the redirection and the `&` appended below.
        .map(|l| l.split_once(" # ").map_or(l, |(c, _)| c).trim_end())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !cmd.contains('\n'),
        "{}:{}: a background block must be one command",
        b.file,
        b.line
    );
    let log = format!("bg-{}.log", b.line);
    format!(
        "{marker}\n{cmd} >{log} 2>&1 &\n__pid=$!\n__ok=\n\
         for __i in $(seq 1 300); do\n\
           if ( {ready} ) >/dev/null 2>&1; then __ok=1; break; fi\n\
           kill -0 $__pid 2>/dev/null || break\n\
           sleep 0.1\n\
         done\n\
         {stop}\
         [ -n \"$__ok\" ] || {{ echo '{f}:{l}: the server exited or never became ready:' >&2; cat {log} >&2; exit 97; }}\n",
        stop = if keep { "" } else { "kill $__pid 2>/dev/null || true\nwait $__pid || true\n" },
        f = b.file,
        l = b.line,
    )
}

/// A port nothing listens on now (the OS picks it; it is released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn path_with_binary() -> String {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mutual"));
    format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs a bash script in `dir` with the binary on PATH and none of the caller's CA settings.
fn run_bash(dir: &Path, body: &str) -> std::process::Output {
    Command::new("timeout")
        .args(["120", "bash", "-c", body])
        .current_dir(dir)
        .env("PATH", path_with_binary())
        .env("DOCS_REPO", repo_root())
        .env_remove("MUTUAL_HOME")
        .env_remove("MUTUAL_CA_PASSWORD")
        .env_remove("MUTUAL_P12_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A script that runs `body` (written to `dir`) in a new network and mount namespace: loopback
/// up, `hosts` resolving to 127.0.0.1 through a private /etc/hosts. Needs root, as the project's
/// machines and CI have.
fn in_netns(dir: &Path, hosts: &[&str], body: &str) -> String {
    std::fs::write(dir.join("docs-script.sh"), body).unwrap();
    format!(
        "printf '127.0.0.1 localhost {}\\n' >hosts.netns\n\
         exec unshare -n -m -- bash -c 'ip link set lo up && mount --bind hosts.netns /etc/hosts && \
         exec bash docs-script.sh'\n",
        hosts.join(" ")
    )
}

/// Whether this process may make a network and mount namespace (root, or a user namespace).
fn netns_available() -> bool {
    Command::new("unshare")
        .args(["-n", "-m", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn every_block_is_run_or_listed_with_a_reason() {
    let skipped = skipped();
    let mut listed_seen = vec![false; skipped.len()];
    let mut background_seen = vec![false; BACKGROUND.len()];
    let mut before_seen = vec![false; BEFORE.len()];
    let mut after_seen = vec![false; AFTER.len()];
    let mut ran = 0;
    let mut failures = Vec::new();
    for file in doc_files() {
        let mut body = String::from("set -e -o pipefail\n");
        body.push_str(COMMON_PRELUDE);
        if let Some((_, pieces)) = PRELUDES.iter().find(|(f, _)| *f == file) {
            pieces.iter().for_each(|p| body.push_str(p));
        }
        for (_, _, ports, ..) in BACKGROUND.iter().filter(|(f, ..)| *f == file) {
            for p in *ports {
                body.push_str(&format!("export PORT_{p}={}\n", free_port()));
            }
        }
        let mut any = false;
        for b in blocks(&file) {
            if let Some(i) = BEFORE
                .iter()
                .position(|(f, first, _)| *f == b.file && *first == first_line(&b))
            {
                before_seen[i] = true;
                BEFORE[i].2.iter().for_each(|p| body.push_str(p));
            }
            if let Some(i) = BACKGROUND
                .iter()
                .position(|(f, first, ..)| *f == b.file && *first == first_command(&b))
            {
                background_seen[i] = true;
                let (_, _, ports, ready, setup, keep) = BACKGROUND[i];
                body.push_str(setup);
                body.push('\n');
                body.push_str(&background_script(&b, ports, ready, keep));
                any = true;
                ran += 1;
                continue;
            }
            if let Some(i) = skipped
                .iter()
                .position(|(f, first, _)| *f == b.file && *first == first_line(&b))
            {
                listed_seen[i] = true;
                println!("skipped {}:{}: {}", b.file, b.line, skipped[i].2);
                continue;
            }
            body.push_str(&script(&b));
            if let Some(i) = AFTER
                .iter()
                .position(|(f, first, _)| *f == b.file && *first == first_line(&b))
            {
                after_seen[i] = true;
                body.push_str(AFTER[i].2);
            }
            any = true;
            ran += 1;
        }
        if !any {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = match NETNS.iter().find(|(f, _)| *f == file) {
            // A developer without root cannot make the namespace: say so instead of failing.
            Some(_) if !netns_available() => {
                println!("skipped {file}: its blocks run in a network namespace (unshare -n), which needs root");
                continue;
            }
            Some((_, hosts)) => run_bash(dir.path(), &in_netns(dir.path(), hosts, &body)),
            None => run_bash(dir.path(), &body),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last_block = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(">>> "))
            .unwrap_or("?");
        if !out.status.success() {
            failures.push(format!(
                "{file}: the block at {last_block} failed as written (exit {:?}); if it cannot run \
                 here, list it in SKIPPED with the reason.\n--- script\n{body}\n--- stdout\n{}\n--- stderr\n{stderr}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for (i, seen) in listed_seen.iter().enumerate() {
        assert!(
            seen,
            "SKIPPED lists a block that no longer exists: {:?}",
            skipped[i]
        );
    }
    for (i, seen) in after_seen.iter().enumerate() {
        assert!(
            seen,
            "AFTER names a block that no longer exists: {:?}",
            AFTER[i].1
        );
    }
    for (i, seen) in before_seen.iter().enumerate() {
        assert!(
            seen,
            "BEFORE names a block that no longer exists: {:?}",
            BEFORE[i].1
        );
    }
    for (i, seen) in background_seen.iter().enumerate() {
        assert!(
            seen,
            "BACKGROUND lists a block that no longer exists: {:?}",
            BACKGROUND[i].0
        );
    }
    assert!(ran >= 10, "only {ran} blocks ran: the extraction is broken");
}

/// Every ```toml block of the docs is accepted: a config file (it has `[[listener]]`) by
/// `mutual config check`, with the certificate files and policy file it names in place, and its
/// summary is the one docs/config.md shows; a policy file by the policy parser and by `mutual
/// config check` as the policy of an HTTP-mode listener (its rules may name methods and paths).
#[test]
fn toml_examples_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let setup = run_bash(
        dir.path(),
        "set -e\nexport MUTUAL_HOME=$PWD/ca MUTUAL_CA_PASSWORD=pw\nmutual ca init >/dev/null\n\
         mutual cert issue api --server --san dns:api.internal --out certs >/dev/null\n\
         mutual cert issue client --client --san uri:spiffe://example.org/ns/web/sa/c --out certs >/dev/null\n\
         cp ca/root.pem certs/root.pem\nmutual ca crl --out certs/intermediate.crl >/dev/null\n",
    );
    assert!(setup.status.success(), "{setup:?}");
    // docs/config.md's admin listener names a policy file the page does not show.
    std::fs::write(
        dir.path().join("admin-policy.toml"),
        "[[allow]]\nspiffe = \"spiffe://example.org/ns/ops/*\"\n",
    )
    .unwrap();
    let mut configs = 0;
    let mut policies = 0;
    for file in doc_files() {
        for (lang, line, lines) in fenced(&file) {
            if lang != "toml" {
                continue;
            }
            let text = lines.join("\n") + "\n";
            let name = format!("{}-{line}.toml", file.replace(['/', '.'], "_"));
            let check = |cfg: &str| {
                let out = Command::new(env!("CARGO_BIN_EXE_mutual"))
                    .args(["config", "check", cfg])
                    .current_dir(dir.path())
                    .output()
                    .unwrap();
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{file}:{line}: `mutual config check` refused the example:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap()
            };
            if text.contains("[[listener]]") {
                configs += 1;
                std::fs::write(dir.path().join("mutual.toml"), &text).unwrap();
                let summary = check("mutual.toml");
                if file == "docs/config.md" {
                    let shown = config_check_transcript();
                    assert_eq!(
                        summary.trim_end(),
                        shown.trim_end(),
                        "{file}: the `mutual config check mutual.toml` output shown differs from the real one"
                    );
                }
            } else {
                policies += 1;
                if let Err(e) = mutual_policy::Policy::from_toml(&text) {
                    panic!("{file}:{line}: the policy parser refused the example: {e}");
                }
                std::fs::write(dir.path().join(&name), &text).unwrap();
                let cfg = format!(
                    "[[listener]]\nname = \"p\"\nkind = \"serve\"\nmode = \"http\"\n\
                     listen = \"127.0.0.1:1\"\nbackend = \"127.0.0.1:2\"\ncert = \"certs/api.pem\"\n\
                     key = \"certs/api.key\"\nca = \"certs/root.pem\"\npolicy = \"{name}\"\n"
                );
                let cfg_name = format!("{name}.config.toml");
                std::fs::write(dir.path().join(&cfg_name), cfg).unwrap();
                check(&cfg_name);
            }
        }
    }
    assert!(configs >= 1, "no config example found in the docs");
    assert!(
        policies >= 2,
        "only {policies} policy examples found: docs/policy.md and docs/http.md have one each"
    );
}

/// The output docs/config.md shows for `$ mutual config check mutual.toml`: the lines after that
/// command, up to the blank line.
fn config_check_transcript() -> String {
    let (_, _, lines) = fenced("docs/config.md")
        .into_iter()
        .find(|(_, _, l)| {
            l.first().map(String::as_str) == Some("$ mutual config check mutual.toml")
        })
        .expect("docs/config.md shows `$ mutual config check mutual.toml`");
    lines
        .iter()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn expected_exit_comments_are_parsed() {
    assert_eq!(
        expected_exit("mutual x --at 2099   # exit 1: expired then"),
        ("mutual x --at 2099".to_string(), Some(1))
    );
    assert_eq!(
        expected_exit("mutual x   # not revoked"),
        ("mutual x   # not revoked".to_string(), None)
    );
}

#[test]
fn console_blocks_run_only_their_prompt_lines_and_operator_paths_are_rebased() {
    let b = Block {
        file: "x.md".to_string(),
        line: 3,
        console: true,
        lines: vec![
            "$ mutual ca crl --out /srv/www/a.crl \\".to_string(),
            "    --next-update 1d".to_string(),
            "wrote /srv/www/a.crl".to_string(),
            "$ mutual cert verify x.pem   # exit 1: not issued".to_string(),
        ],
    };
    let s = script(&b);
    assert!(
        s.contains("mutual ca crl --out $R/srv/www/a.crl     --next-update 1d\n"),
        "{s}"
    );
    assert!(!s.contains("wrote"), "{s}");
    assert!(
        s.contains("if mutual cert verify x.pem; then __rc=0; else __rc=$?; fi"),
        "{s}"
    );
    assert_eq!(
        rebase("cp a /etc/mutual/a --x=/var/lib/mutual/b https://h/srv/c"),
        "cp a $R/etc/mutual/a --x=$R/var/lib/mutual/b https://h/srv/c"
    );
}
