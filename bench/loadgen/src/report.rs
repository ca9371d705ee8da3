//! Turns the JSON lines of one harness run into the markdown table: each figure for every
//! contender, and the ratio mutual/peer, so a reader sees at once where mutual stands.

use serde_json::Value;

/// One row of the table: which case and which field of its JSON line.
struct Row {
    label: &'static str,
    case: &'static str,
    pointer: &'static str,
    /// Whether mutual/peer means anything for this row (not for counts and fractions).
    ratio: bool,
}

const ROWS: &[Row] = &[
    Row {
        label: "full handshakes/s, c=1 (new conn + 1 req)",
        case: "hs_c1",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "hs_c1",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "full handshakes/s, c=1, client openssl s_time -new",
        case: "hs_c1_openssl",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "hs_c1_openssl",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "full handshakes/s, c=16",
        case: "hs_c16",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "hs_c16",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "full handshakes/s, c=256",
        case: "hs_c256",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "hs_c256",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "resumed handshakes/s, c=16",
        case: "resume_c16",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "resume_c16",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "  fraction resumed",
        case: "resume_c16",
        pointer: "/resumed_fraction",
        ratio: false,
    },
    Row {
        label: "resumed handshakes/s, c=1, client openssl s_time -reuse",
        case: "resume_c1_openssl",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "resume_c1_openssl",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "  fraction resumed",
        case: "resume_c1_openssl",
        pointer: "/resumed_fraction",
        ratio: false,
    },
    Row {
        label: "requests/s, c=16 kept-alive",
        case: "req_c16",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  p50 latency µs (lower is better)",
        case: "req_c16",
        pointer: "/latency/p50_us",
        ratio: true,
    },
    Row {
        label: "  p99 latency µs (lower is better)",
        case: "req_c16",
        pointer: "/latency/p99_us",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "req_c16",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "requests/s at a fixed rate (open loop), c=16 kept-alive",
        case: "req_c16_open",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  p50 latency µs (lower is better)",
        case: "req_c16_open",
        pointer: "/latency/p50_us",
        ratio: true,
    },
    Row {
        label: "  p99 latency µs (lower is better)",
        case: "req_c16_open",
        pointer: "/latency/p99_us",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "req_c16_open",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "bulk upload MB/s",
        case: "bulk_up",
        pointer: "/mb_per_s",
        ratio: true,
    },
    Row {
        label: "bulk download MB/s",
        case: "bulk_down",
        pointer: "/mb_per_s",
        ratio: true,
    },
    Row {
        label: "idle connections held",
        case: "idle",
        pointer: "/ready",
        ratio: false,
    },
    Row {
        label: "  RSS per idle connection KiB (lower is better)",
        case: "idle",
        pointer: "/rss_per_conn_kib",
        ratio: true,
    },
    Row {
        label: "HTTP mode, identity forwarded: new conns/s, HTTP/1.1, c=16 (1 req each)",
        case: "http_hs_c16",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "http_hs_c16",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "HTTP mode: requests/s, HTTP/1.1, c=16 kept-alive",
        case: "http_req_c16",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  p50 latency µs (lower is better)",
        case: "http_req_c16",
        pointer: "/latency/p50_us",
        ratio: true,
    },
    Row {
        label: "  p99 latency µs (lower is better)",
        case: "http_req_c16",
        pointer: "/latency/p99_us",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "http_req_c16",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "HTTP mode: new conns/s, HTTP/2, c=16 (1 req each)",
        case: "http2_hs_c16",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "http2_hs_c16",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "HTTP mode: requests/s, HTTP/2, c=16 kept-alive",
        case: "http2_req_c16",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  p50 latency µs (lower is better)",
        case: "http2_req_c16",
        pointer: "/latency/p50_us",
        ratio: true,
    },
    Row {
        label: "  p99 latency µs (lower is better)",
        case: "http2_req_c16",
        pointer: "/latency/p99_us",
        ratio: true,
    },
    Row {
        label: "  per server CPU-second",
        case: "http2_req_c16",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "client side: new plaintext conns/s through the client proxy, c=16",
        case: "connect_hs_c16",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  per client-proxy CPU-second",
        case: "connect_hs_c16",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
    Row {
        label: "  mTLS server CPU µs per connection (lower when the proxy resumes)",
        case: "connect_hs_c16",
        pointer: "/upstream_cpu_us_per_conn",
        ratio: false,
    },
    Row {
        label: "client side: requests/s through client proxy + server, c=16 kept-alive",
        case: "connect_req_c16",
        pointer: "/rate",
        ratio: true,
    },
    Row {
        label: "  p99 latency µs (lower is better)",
        case: "connect_req_c16",
        pointer: "/latency/p99_us",
        ratio: true,
    },
    Row {
        label: "  per client-proxy CPU-second",
        case: "connect_req_c16",
        pointer: "/per_server_cpu_s",
        ratio: true,
    },
];

/// mutual alone: a figure of one case beside the reference it is compared with (`--threads 2`
/// against `--threads 1`, audit log and metrics on against off), and the ratio between them.
const MUTUAL_ALONE: &[(&str, &str, &str, &str)] = &[
    (
        "full handshakes/s, c=16, unpinned: --threads 2 vs --threads 1 (scaling factor)",
        "scale_t2_hs_c16",
        "scale_t1_hs_c16",
        "/rate",
    ),
    (
        "  per server CPU-second, --threads 2 vs --threads 1",
        "scale_t2_hs_c16",
        "scale_t1_hs_c16",
        "/per_server_cpu_s",
    ),
    (
        "full handshakes/s, c=16: audit log + metrics on vs off",
        "prod_hs_c16",
        "hs_c16",
        "/rate",
    ),
    (
        "  per server CPU-second, on vs off",
        "prod_hs_c16",
        "hs_c16",
        "/per_server_cpu_s",
    ),
    (
        "requests/s, c=16 kept-alive: audit log + metrics on vs off",
        "prod_req_c16",
        "req_c16",
        "/rate",
    ),
    (
        "  p99 latency µs, on vs off (lower is better)",
        "prod_req_c16",
        "req_c16",
        "/latency/p99_us",
    ),
    (
        "  per server CPU-second, on vs off",
        "prod_req_c16",
        "req_c16",
        "/per_server_cpu_s",
    ),
];

/// Full-handshake cases and the client that made them: the "two clients" section compares the
/// per-server-CPU-second figure of each (issue 25).
const HANDSHAKE_CLIENTS: &[(&str, &str)] = &[
    ("hs_c1", "loadgen (rustls), c=1"),
    ("hs_c16", "loadgen (rustls), c=16"),
    ("hs_c256", "loadgen (rustls), c=256"),
    ("hs_c1_openssl", "openssl s_time -new, c=1"),
];

/// The contender the ratios are about, and the baseline that gets a column but no ratio.
const US: &str = "mutual";
const DIRECT: &str = "direct";

pub fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A table cell: the figure, or "–" when the run has none.
fn figure(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "–".into())
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// Renders the table and notes from the lines of a results file.
pub fn render(input: &str) -> String {
    let lines: Vec<Value> = input
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Contenders in the order the harness announced them, with their status.
    let mut contenders: Vec<(String, String)> = Vec::new();
    for l in &lines {
        if let Some(status) = l.get("status").and_then(Value::as_str) {
            let name = str_of(l, "contender").to_string();
            contenders.retain(|(n, _)| *n != name);
            contenders.push((name, status.to_string()));
        }
    }
    let find = |who: &str, case: &str| {
        lines.iter().rev().find(|l| {
            str_of(l, "contender") == who && str_of(l, "case") == case && l.get("status").is_none()
        })
    };
    let value = |who: &str, row: &Row| -> Option<f64> {
        let l = find(who, row.case)?;
        if l.get("ok").and_then(Value::as_u64) == Some(0) && row.pointer != "/ready" {
            return None;
        }
        l.pointer(row.pointer).and_then(Value::as_f64)
    };
    let available = |who: &str| contenders.iter().any(|(n, s)| n == who && s == "ok");
    let cell = |who: &str, row: &Row| -> String {
        if !available(who) {
            return "n/a".into();
        }
        let failed =
            find(who, row.case).is_some_and(|l| l.get("ok").and_then(Value::as_u64) == Some(0));
        match value(who, row) {
            Some(v) => fmt_num(v),
            None if failed && row.pointer != "/ready" => "failed".into(),
            None => "–".into(),
        }
    };
    let peers: Vec<&str> = contenders
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != US && *n != DIRECT)
        .collect();

    let mut out = String::new();
    let mut header = String::from("| figure |");
    let mut rule = String::from("|---|");
    for (n, _) in &contenders {
        header.push_str(&format!(
            " {} |",
            if n == DIRECT { "direct (no TLS)" } else { n }
        ));
        rule.push_str("---:|");
    }
    for p in &peers {
        header.push_str(&format!(" {US}/{p} |"));
        rule.push_str("---:|");
    }
    out.push_str(&header);
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for row in ROWS {
        // Skip rows that no contender measured (e.g. QUICK mode leaves some cases out).
        if contenders.iter().all(|(n, _)| find(n, row.case).is_none()) {
            continue;
        }
        let mut line = format!("| {} |", row.label.replace("  ", "&nbsp;&nbsp;"));
        for (n, _) in &contenders {
            line.push_str(&format!(" {} |", cell(n, row)));
        }
        for p in &peers {
            let ratio = match (
                available(US).then(|| value(US, row)).flatten(),
                value(p, row),
            ) {
                (Some(a), Some(b)) if row.ratio && b != 0.0 && available(p) => {
                    format!("{:.2}", a / b)
                }
                _ => "–".into(),
            };
            line.push_str(&format!(" {ratio} |"));
        }
        out.push_str(&line);
        out.push('\n');
    }

    // Full handshakes per server CPU-second under each client, and the lowest mutual/peer ratio
    // over the clients: the conservative figure a headline may quote, with the client named.
    if contenders
        .iter()
        .any(|(n, _)| find(n, "hs_c1_openssl").is_some())
    {
        out.push_str("\n### Full handshakes per server CPU-second, by client\n\n");
        let mut header = String::from("| client |");
        let mut rule = String::from("|---|");
        let servers: Vec<&str> = contenders
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n != DIRECT)
            .collect();
        for n in &servers {
            header.push_str(&format!(" {n} |"));
            rule.push_str("---:|");
        }
        out.push_str(&format!("{header}\n{rule}\n"));
        let per_cpu = |case: &'static str| Row {
            label: "",
            case,
            pointer: "/per_server_cpu_s",
            ratio: true,
        };
        for (case, client) in HANDSHAKE_CLIENTS {
            let row = per_cpu(case);
            if servers.iter().all(|n| find(n, case).is_none()) {
                continue;
            }
            let mut line = format!("| {client} |");
            for n in &servers {
                line.push_str(&format!(" {} |", cell(n, &row)));
            }
            out.push_str(&line);
            out.push('\n');
        }
        if available(US) {
            let mut line = format!("| lowest {US}/peer over these clients (client) |");
            for n in &servers {
                let lowest = (*n != US && available(n))
                    .then(|| {
                        HANDSHAKE_CLIENTS
                            .iter()
                            .filter_map(|(case, client)| {
                                let row = per_cpu(case);
                                let (a, b) = (value(US, &row)?, value(n, &row)?);
                                (b > 0.0).then_some((a / b, *client))
                            })
                            .min_by(|x, y| x.0.total_cmp(&y.0))
                    })
                    .flatten();
                match lowest {
                    Some((r, client)) => line.push_str(&format!(" {r:.2} ({client}) |")),
                    None => line.push_str(" – |"),
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
    }

    out.push_str(&mutual_alone(&lines));
    out.push_str(&client_side_resumption(&lines, &contenders));
    out.push_str(&floor_and_bounds(&lines));

    out.push_str("\n### Contenders\n\n");
    for (n, s) in &contenders {
        let negotiated = find(n, "hs_c1")
            .map(|l| format!(" ({}, {})", str_of(l, "suite"), str_of(l, "group")))
            .filter(|s| s != " (, )")
            .unwrap_or_default();
        if s == "ok" {
            out.push_str(&format!("- {n}: ran{negotiated}\n"));
        } else {
            out.push_str(&format!("- {n}: {s}\n"));
        }
    }

    let mut notes = Vec::new();
    for l in &lines {
        let failed = l.get("failed").and_then(Value::as_u64).unwrap_or(0);
        if failed > 0 {
            notes.push(format!(
                "- {} {}: {} failed, {} ok (first error: {})",
                str_of(l, "contender"),
                str_of(l, "case"),
                failed,
                l.get("ok").and_then(Value::as_u64).unwrap_or(0),
                str_of(l, "first_error")
            ));
        }
        if l.get("truncated").and_then(Value::as_bool) == Some(true) {
            notes.push(format!(
                "- {} {}: stopped at the time limit after {} bytes (rate is over what was sent)",
                str_of(l, "contender"),
                str_of(l, "case"),
                l.get("transferred").and_then(Value::as_u64).unwrap_or(0)
            ));
        }
    }
    if !notes.is_empty() {
        out.push_str("\n### Failures and truncations\n\n");
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }

    if let Some(c) = lines.iter().find(|l| str_of(l, "mode") == "crypto") {
        let g = |k: &str| figure(c.get(k).and_then(Value::as_f64));
        out.push_str("\n### The crypto limit on this machine (aws-lc-rs, one core)\n\n");
        out.push_str("| operation | per second |\n|---|---:|\n");
        for (label, key) in [
            ("ECDSA P-256 sign", "ecdsa_p256_sign_per_s"),
            ("ECDSA P-256 verify", "ecdsa_p256_verify_per_s"),
            ("X25519 key share + agreement", "x25519_per_s"),
            ("ML-KEM-768 encapsulate", "mlkem768_encaps_per_s"),
            ("ML-KEM-768 decapsulate", "mlkem768_decaps_per_s"),
            ("AES-128-GCM, MB/s (16 KiB records)", "aes128gcm_mb_per_s"),
            (
                "bound: server mTLS handshakes (1 sign + 3 verify + X25519)",
                "server_handshake_bound_per_s_x25519",
            ),
            (
                "bound: the same with X25519MLKEM768",
                "server_handshake_bound_per_s_mlkem",
            ),
        ] {
            out.push_str(&format!("| {label} | {} |\n", g(key)));
        }
        // rustls alone (`crypto --certs`): a stock rustls server's side of the handshake in memory.
        for (label, key) in [
            (
                "rustls alone, server side, in memory: full mTLS handshakes (all of TLS 1.3's crypto, no sockets, no proxy)",
                "rustls_server_full_us",
            ),
            (
                "rustls alone, server side, in memory: resumed handshakes",
                "rustls_server_resumed_us",
            ),
        ] {
            if let Some(us) = c.get(key).and_then(Value::as_f64).filter(|u| *u > 0.0) {
                out.push_str(&format!("| {label} | {} |\n", fmt_num(1e6 / us)));
            }
        }
    }
    if let Some(c) = lines.iter().find(|l| str_of(l, "mode") == "ca") {
        let g = |k: &str| figure(c.get(k).and_then(Value::as_f64));
        out.push_str("\n### The CA (mutual only; SQLite inventory, synchronous=FULL)\n\n");
        out.push_str("| figure | value |\n|---|---:|\n");
        let tasks = c.get("issue_tasks").and_then(Value::as_u64).unwrap_or(0);
        let threads = c.get("threads").and_then(Value::as_u64).unwrap_or(1);
        let rows = g("inventory_rows");
        let revoked = g("revoked_rows");
        for (label, key) in [
            (
                format!("certificates issued per second ({tasks} tasks, in process, {threads} runtime thread(s) as the run pinned them, key generation + signing + one row each)"),
                "issued_per_s",
            ),
            ("&nbsp;&nbsp;CPU-seconds per 1,000 certificates (whole process)".to_string(), "cpu_s_per_1000"),
            ("&nbsp;&nbsp;rows per commit (group commit: mean)".to_string(), "rows_per_group"),
            (format!("inventory rows for the timings below ({revoked} revoked; synthetic rows inserted with SQL)"), "inventory_rows"),
            (format!("list all {rows} rows, in process (s)"), "list_s"),
            (format!("CRL with {revoked} entries, in process (s)"), "crl_s"),
            ("CRL size (bytes)".to_string(), "crl_bytes"),
            ("`mutual cert list` (s, table to /dev/null)".to_string(), "cli_cert_list_s"),
            ("`mutual cert list --json` (s)".to_string(), "cli_cert_list_json_s"),
            ("`mutual ca crl` (s, includes unlocking the key)".to_string(), "cli_ca_crl_s"),
        ] {
            out.push_str(&format!("| {label} | {} |\n", g(key)));
        }
        // The same issuance with both cores (`--threads 2`, nothing pinned): the CA has no
        // contender, so what one core gives is a choice of set-up, not a rule; CPU per
        // certificate shows what the second core cost.
        if let Some(two) = lines.iter().find(|l| str_of(l, "case") == "ca_2cpu") {
            let f = |k: &str| figure(two.get(k).and_then(Value::as_f64));
            out.push_str(&format!(
                "| certificates issued per second, both cores ({} tasks, `--threads {}`, nothing pinned) | {} |\n",
                f("issue_tasks"),
                f("threads"),
                f("issued_per_s")
            ));
            out.push_str(&format!(
                "| &nbsp;&nbsp;CPU-seconds per 1,000 certificates (whole process) / rows per commit | {} / {} |\n",
                f("cpu_s_per_1000"),
                f("rows_per_group")
            ));
        }
        if let Some(api) = lines.iter().find(|l| str_of(l, "case") == "ca_api_renew") {
            let f = |k: &str| figure(api.get(k).and_then(Value::as_f64));
            out.push_str(&format!(
                "| certificates issued per second via the API (`mutual ca serve`, POST /v1/renew over {} kept-alive mTLS connections) | {} |\n",
                f("concurrency"),
                f("rate")
            ));
            out.push_str(&format!(
                "| &nbsp;&nbsp;per CA-server CPU-second | {} |\n",
                f("per_server_cpu_s")
            ));
            out.push_str(&format!(
                "| &nbsp;&nbsp;p99 latency µs | {} |\n",
                figure(api.pointer("/latency/p99_us").and_then(Value::as_f64))
            ));
        }
        if let Some(e) = c.get("first_error").and_then(Value::as_str) {
            out.push_str(&format!("\nfirst issuance error: {e}\n"));
        }
    }
    out
}

/// Which client proxies resumed: the mTLS server's CPU per connection behind each, beside what
/// it costs the server for a full and for a resumed handshake from loadgen in the same run, and
/// the share of resumed handshakes that puts it at (a straight line between the two references,
/// clipped to 0-100%). mutual's row is read against references with X25519MLKEM768 when the run
/// measured them (`connect_ref_*_mlkem`): `mutual connect` negotiates it (rustls's preference),
/// the OpenSSL 3.0 peers X25519, and the hybrid costs the server more on both kinds.
fn client_side_resumption(lines: &[Value], contenders: &[(String, String)]) -> String {
    let per_conn = |who: &str, case: &str| {
        lines
            .iter()
            .rev()
            .find(|l| str_of(l, "contender") == who && str_of(l, "case") == case)
            .and_then(|l| l.get("upstream_cpu_us_per_conn"))
            .and_then(Value::as_f64)
    };
    let (Some(full), Some(resumed)) = (
        per_conn(US, "connect_ref_full"),
        per_conn(US, "connect_ref_resumed"),
    ) else {
        return String::new();
    };
    let pq = per_conn(US, "connect_ref_full_mlkem").zip(per_conn(US, "connect_ref_resumed_mlkem"));
    let mut out = format!(
        "\n### Client side: did each proxy resume?\n\nThe mTLS server's CPU µs per connection: {} for a full handshake, {} for a resumed one (loadgen straight to it, X25519, same run)",
        fmt_num(full),
        fmt_num(resumed)
    );
    if let Some((f, r)) = pq {
        out.push_str(&format!(
            "; with X25519MLKEM768, what `mutual connect` negotiates: {} and {}",
            fmt_num(f),
            fmt_num(r)
        ));
    }
    out.push_str(".\n\n| client proxy | server CPU µs per connection | read against (full / resumed) | resumed, estimated |\n|---|---:|---|---:|\n");
    for (who, _) in contenders {
        if let Some(v) = per_conn(who, "connect_hs_c16") {
            let (f, r) = match pq {
                Some(refs) if who == US => refs,
                _ => (full, resumed),
            };
            let share = if f > r {
                ((f - v) / (f - r)).clamp(0.0, 1.0) * 100.0
            } else {
                0.0
            };
            out.push_str(&format!(
                "| {who} | {} | {} / {} | {share:.0}% |\n",
                fmt_num(v),
                fmt_num(f),
                fmt_num(r)
            ));
        }
    }
    out
}

/// The contender name of the floor: a plain TCP proxy (HAProxy `mode tcp`, no TLS) doing what
/// every TLS proxy does per connection besides TLS (accept, dial the backend, relay one request
/// and response, two closes). Not a column of the main table: it is no TLS contender.
const FLOOR: &str = "floor";

/// What bounds a handshake (issue 20): the crypto a handshake cannot avoid (the crypto line),
/// plus the per-connection kernel and proxy work no TLS proxy avoids (the floor: a plain TCP
/// proxy on the same case), against what mutual spends. Empty when the floor was not measured.
fn floor_and_bounds(lines: &[Value]) -> String {
    let find = |who: &str, case: &str| {
        lines.iter().rev().find(|l| {
            str_of(l, "contender") == who
                && str_of(l, "case") == case
                && l.get("status").is_none()
                && l.get("ok").and_then(Value::as_u64).unwrap_or(0) > 0
        })
    };
    let num = |l: Option<&Value>, pointer: &str| l.and_then(|l| l.pointer(pointer)?.as_f64());
    let floor_hs = find(FLOOR, "floor_hs_c16");
    let floor_req = find(FLOOR, "floor_req_c16");
    if floor_hs.is_none() && floor_req.is_none() {
        return String::new();
    }
    let full = find(US, "hs_c16");
    let resumed = find(US, "resume_c16");
    let direct = find(DIRECT, "req_c16");
    let us_req = find(US, "req_c16");
    // CPU µs per connection (user, system) of one line.
    let per_conn = |l: Option<&Value>| -> Option<(f64, f64, f64)> {
        let rate = num(l, "/per_server_cpu_s")?;
        let total = 1e6 / rate;
        match (
            num(l, "/server_user_us_per_unit"),
            num(l, "/server_sys_us_per_unit"),
        ) {
            (Some(u), Some(s)) => Some((total, u, s)),
            _ => Some((total, f64::NAN, f64::NAN)),
        }
    };
    let cpu_cell = |v: Option<(f64, f64, f64)>| match v {
        Some((t, u, s)) if u.is_finite() => {
            format!(
                "{} ({} user + {} system)",
                fmt_num(t),
                fmt_num(u),
                fmt_num(s)
            )
        }
        Some((t, _, _)) => fmt_num(t),
        None => "–".into(),
    };
    let mut out = String::from(concat!(
        "\n### What bounds a handshake: the crypto, the floor, and mutual's share (issue 20)\n\n",
        "The floor is a plain TCP proxy (HAProxy `mode tcp`, no TLS, same pinning, same backend) on the\n",
        "same cases: accept, dial the backend, relay one request and its response, two closes, which\n",
        "every TLS proxy pays per connection on top of the crypto. CPU is the server process tree's\n",
        "(/proc/PID/stat utime and stime).\n\n",
        "| figure | mutual | floor (plain TCP proxy) |\n|---|---:|---:|\n",
    ));
    out.push_str(&format!(
        "| new connections + 1 request, c=16: per server CPU-second (mutual: full handshakes) | {} | {} |\n",
        figure(num(full, "/per_server_cpu_s")),
        figure(num(floor_hs, "/per_server_cpu_s")),
    ));
    out.push_str(&format!(
        "| &nbsp;&nbsp;server CPU µs per connection | {} | {} |\n",
        cpu_cell(per_conn(full)),
        cpu_cell(per_conn(floor_hs)),
    ));
    out.push_str(&format!(
        "| resumed handshakes, c=16: server CPU µs per connection | {} | – |\n",
        cpu_cell(per_conn(resumed)),
    ));
    let lat = |l: Option<&Value>, q: &str| num(l, &format!("/latency/{q}_us"));
    let added = |l: Option<&Value>, base: Option<&Value>, q: &str| Some(lat(l, q)? - lat(base, q)?);
    for q in ["p50", "p99"] {
        out.push_str(&format!(
            "| requests, c=16 kept-alive: {q} latency µs added over the direct path ({} direct) | {} | {} |\n",
            figure(lat(direct, q)),
            figure(added(us_req, direct, q)),
            figure(added(floor_req, direct, q)),
        ));
    }
    out.push_str(&format!(
        "| &nbsp;&nbsp;per server CPU-second (requests) | {} | {} |\n",
        figure(num(us_req, "/per_server_cpu_s")),
        figure(num(floor_req, "/per_server_cpu_s")),
    ));
    // Little's law for the closed loop: 16 requests always in flight, so p50 x rate is about
    // 16 and the latency is the loop's throughput (the client's core is shared with the backend).
    let in_flight = |l: Option<&Value>| Some(lat(l, "p50")? * 1e-6 * num(l, "/rate")?);
    out.push_str(&format!(
        "| &nbsp;&nbsp;requests in flight, p50 x requests/s (closed loop: 16 always; {} direct) | {} | {} |\n",
        figure(in_flight(direct)),
        figure(in_flight(us_req)),
        figure(in_flight(floor_req)),
    ));
    let direct_open = find(DIRECT, "req_c16_open");
    let us_open = find(US, "req_c16_open");
    let floor_open = find(FLOOR, "floor_req_c16_open");
    if us_open.is_some() || floor_open.is_some() {
        let target = num(direct_open.or(us_open), "/target_rate");
        for q in ["p50", "p99"] {
            out.push_str(&format!(
                "| requests at a fixed {}/s (open loop), c=16 kept-alive: {q} latency µs added over the direct path ({} direct) | {} | {} |\n",
                figure(target),
                figure(lat(direct_open, q)),
                figure(added(us_open, direct_open, q)),
                figure(added(floor_open, direct_open, q)),
            ));
        }
    }

    // The bounds: crypto alone, crypto + floor, and mutual's share of each.
    let crypto = lines.iter().find(|l| str_of(l, "mode") == "crypto");
    let c_full = num(crypto, "/server_handshake_crypto_us_x25519");
    // A resumed TLS 1.3 handshake (psk_dhe_ke) does no signature: only the key exchange.
    let c_res = num(crypto, "/x25519_per_s").map(|r| 1e6 / r);
    let floor_us = per_conn(floor_hs).map(|(t, _, _)| t);
    let m_full = num(full, "/per_server_cpu_s");
    let m_res = num(resumed, "/per_server_cpu_s");
    let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.0}%", 100.0 * a / b),
        _ => "–".into(),
    };
    let rate = |us: Option<f64>| us.filter(|u| *u > 0.0).map(|u| 1e6 / u);
    let sum = |a: Option<f64>, b: Option<f64>| Some(a? + b?);
    let (full_bound, res_bound) = (rate(sum(c_full, floor_us)), rate(sum(c_res, floor_us)));
    out.push_str(
        "\n| bound (per server CPU-second) | bound | mutual | mutual's share |\n|---|---:|---:|---:|\n",
    );
    for (label, bound, m) in [
        (
            "full handshakes: crypto only (1 sign + 3 verify + X25519)",
            rate(c_full),
            m_full,
        ),
        ("full handshakes: crypto + floor", full_bound, m_full),
        (
            "resumed handshakes: crypto only (X25519)",
            rate(c_res),
            m_res,
        ),
        ("resumed handshakes: crypto + floor", res_bound, m_res),
    ] {
        out.push_str(&format!(
            "| {label} | {} | {} | {} |\n",
            figure(bound),
            figure(m),
            pct(m, bound)
        ));
    }
    // rustls alone (a stock rustls server's side of the handshake, in memory) + the floor: what a
    // proxy with no code of its own around rustls would spend per connection.
    let a_full = num(crypto, "/rustls_server_full_us");
    let a_res = num(crypto, "/rustls_server_resumed_us");
    let (alone_full, alone_res) = (rate(sum(a_full, floor_us)), rate(sum(a_res, floor_us)));
    if a_full.is_some() {
        for (label, bound, m) in [
            ("full handshakes: rustls alone + floor", alone_full, m_full),
            ("resumed handshakes: rustls alone + floor", alone_res, m_res),
        ] {
            out.push_str(&format!(
                "| {label} | {} | {} | {} |\n",
                figure(bound),
                figure(m),
                pct(m, bound)
            ));
        }
    }
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    };
    if a_full.is_some() {
        out.push_str(&format!(
            "\n- a proxy that adds nothing to rustls (rustls alone + floor), as a share of the crypto-only bound: {}; resumed/full for it: {}\n",
            pct(alone_full, rate(c_full)),
            ratio(alone_res, alone_full),
        ));
    }
    out.push_str(&format!(
        "\n- the most any TLS proxy can reach here, as a share of the crypto-only bound (crypto / (crypto + floor)): {}\n",
        pct(c_full, sum(c_full, floor_us)),
    ));
    out.push_str(&format!(
        "- resumed/full per server CPU-second, at most (crypto + floor bounds): {}; mutual: {}\n",
        ratio(res_bound, full_bound),
        ratio(m_res, m_full),
    ));
    let beyond =
        |m: Option<f64>, c: Option<f64>| figure(sum(c, floor_us).and_then(|b| Some(1e6 / m? - b)));
    out.push_str(&format!(
        "- mutual's CPU µs per connection beyond crypto + floor: {} full, {} resumed\n",
        beyond(m_full, c_full),
        beyond(m_res, c_res),
    ));
    out
}

/// The "mutual alone" section: scaling with threads, the cost of the audit log and metrics, and
/// idle connections through `mutual run` with two listeners. Empty when none of it ran.
fn mutual_alone(lines: &[Value]) -> String {
    let find = |case: &str| {
        lines
            .iter()
            .rev()
            .find(|l| str_of(l, "contender") == US && str_of(l, "case") == case)
    };
    let num = |case: &str, pointer: &str| -> Option<f64> {
        let l = find(case)?;
        if l.get("ok").and_then(Value::as_u64) == Some(0) && pointer != "/ready" {
            return None;
        }
        l.pointer(pointer).and_then(Value::as_f64)
    };
    let mut rows = String::new();
    for (label, case, reference, pointer) in MUTUAL_ALONE {
        if find(case).is_none() {
            continue;
        }
        let (a, b) = (num(case, pointer), num(reference, pointer));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
            _ => "–".into(),
        };
        rows.push_str(&format!(
            "| {} | {} | {} | {ratio} |\n",
            label.replace("  ", "&nbsp;&nbsp;"),
            figure(a),
            figure(b)
        ));
    }
    if let Some(l) = find("prod_hs_c16").filter(|l| l.get("audit_lines").is_some()) {
        let n = |k: &str| l.get(k).and_then(Value::as_u64).unwrap_or(0);
        rows.push_str(&format!(
            "| &nbsp;&nbsp;check, audit log + metrics on: allowed audit lines / `mutual_handshakes_total{{result=\"allowed\"}}`, vs connections counted | {} / {} | {} | – |\n",
            n("audit_lines"),
            n("metric_allowed"),
            n("ok")
        ));
    }
    if let Some(l) = find("idle_run2") {
        let extra = |k: &str| l.get(k).and_then(Value::as_f64);
        rows.push_str(&format!(
            "| idle connections through `mutual run`, two listeners: held of {} wanted (seen established by ss: {}) | {} | – | – |\n",
            figure(extra("requested")),
            figure(extra("established_ss")),
            figure(num("idle_run2", "/ready")),
        ));
        rows.push_str(&format!(
            "| &nbsp;&nbsp;RSS per idle connection KiB, two listeners vs one (`serve`) | {} | {} | {} |\n",
            figure(num("idle_run2", "/rss_per_conn_kib")),
            figure(num("idle", "/rss_per_conn_kib")),
            match (num("idle_run2", "/rss_per_conn_kib"), num("idle", "/rss_per_conn_kib")) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
                _ => "–".into(),
            }
        ));
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "\n### mutual alone: threads, production settings, two listeners\n\n| figure | this case | reference | ratio |\n|---|---:|---:|---:|\n{rows}"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn table_has_ratios_and_marks_missing_contenders() {
        let input = r#"
{"contender":"mutual","status":"ok"}
{"contender":"nginx","status":"ok"}
{"contender":"stunnel","status":"not available: stunnel4 not installed"}
{"contender":"mutual","case":"hs_c1","mode":"handshakes","ok":100,"failed":0,"rate":2000.0,"suite":"TLS13_AES_128_GCM_SHA256","group":"X25519"}
{"contender":"nginx","case":"hs_c1","mode":"handshakes","ok":100,"failed":2,"rate":500.0,"first_error":"reset"}
{"contender":"nginx","case":"hs_c16","mode":"handshakes","ok":0,"failed":9,"rate":0.0}
{"contender":"mutual","case":"hs_c16","mode":"handshakes","ok":10,"failed":0,"rate":5.0}
{"mode":"crypto","ecdsa_p256_sign_per_s":37000.0}
{"mode":"ca","issue_tasks":4,"issued_per_s":812.5,"inventory_rows":100000,"revoked_rows":10000,"list_s":0.512}
"#;
        let md = render(input);
        assert!(
            md.contains("| figure | mutual | nginx | stunnel | mutual/nginx | mutual/stunnel |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| full handshakes/s, c=1 (new conn + 1 req) | 2000 | 500 | n/a | 4.00 | – |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| full handshakes/s, c=16 | 5.00 | failed | n/a | – | – |"),
            "{md}"
        );
        // A line without the field (no --server-pid given) is a dash, not a failure.
        assert!(
            md.contains("| &nbsp;&nbsp;per server CPU-second | – | – | n/a | – | – |"),
            "{md}"
        );
        assert!(md.contains("stunnel: not available: stunnel4 not installed"));
        assert!(md.contains("nginx hs_c1: 2 failed, 100 ok (first error: reset)"));
        assert!(md.contains("| ECDSA P-256 sign | 37000 |"));
        assert!(
            md.contains("certificates issued per second (4 tasks"),
            "{md}"
        );
        assert!(
            md.contains("| list all 100000 rows, in process (s) | 0.51 |"),
            "{md}"
        );
        // Cases nobody ran do not get rows.
        assert!(!md.contains("bulk upload"));
    }

    #[test]
    fn unavailable_mutual_gives_no_ratios() {
        let input = r#"{"contender":"mutual","status":"not available: serve not implemented"}
{"contender":"haproxy","status":"ok"}
{"contender":"haproxy","case":"req_c16","ok":10,"failed":0,"rate":9000.0,"latency":{"p50_us":100,"p99_us":900}}"#;
        let md = render(input);
        assert!(
            md.contains("| requests/s, c=16 kept-alive | n/a | 9000 | – |"),
            "{md}"
        );
        assert!(
            md.contains("p99 latency µs (lower is better) | n/a | 900 | – |"),
            "{md}"
        );
        assert!(md.contains("- mutual: not available: serve not implemented"));
    }

    #[test]
    fn two_clients_section_names_the_client_of_the_lowest_ratio() {
        let input = r#"{"contender":"mutual","status":"ok"}
{"contender":"haproxy","status":"ok"}
{"contender":"stunnel","status":"not available: not installed"}
{"contender":"mutual","case":"hs_c1","ok":10,"rate":1000.0,"per_server_cpu_s":2000.0}
{"contender":"haproxy","case":"hs_c1","ok":10,"rate":500.0,"per_server_cpu_s":640.0}
{"contender":"mutual","case":"hs_c1_openssl","ok":10,"rate":900.0,"per_server_cpu_s":2100.0}
{"contender":"haproxy","case":"hs_c1_openssl","ok":10,"rate":600.0,"per_server_cpu_s":700.0}"#;
        let md = render(input);
        assert!(
            md.contains("| full handshakes/s, c=1, client openssl s_time -new | 900 | 600 | n/a | 1.50 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| client | mutual | haproxy | stunnel |"),
            "{md}"
        );
        assert!(
            md.contains("| openssl s_time -new, c=1 | 2100 | 700 | n/a |"),
            "{md}"
        );
        // 2000/640 = 3.13 under loadgen, 2100/700 = 3.00 under s_time: the lower one, named.
        assert!(
            md.contains(
                "| lowest mutual/peer over these clients (client) | – | 3.00 (openssl s_time -new, c=1) | – |"
            ),
            "{md}"
        );
        // Without an s_time line the section is not printed.
        let md = render(
            r#"{"contender":"mutual","status":"ok"}
{"contender":"mutual","case":"hs_c1","ok":10,"rate":1000.0,"per_server_cpu_s":2000.0}"#,
        );
        assert!(!md.contains("by client"), "{md}");
    }

    #[test]
    fn mutual_alone_section_compares_with_its_reference() {
        let input = r#"{"contender":"mutual","status":"ok"}
{"contender":"mutual","case":"hs_c16","ok":10,"rate":1000.0,"per_server_cpu_s":1100.0}
{"contender":"mutual","case":"scale_t1_hs_c16","ok":10,"rate":800.0}
{"contender":"mutual","case":"scale_t2_hs_c16","ok":10,"rate":1200.0}
{"contender":"mutual","case":"prod_hs_c16","ok":10,"rate":900.0,"per_server_cpu_s":990.0,"audit_lines":10,"metric_allowed":10}
{"contender":"mutual","case":"idle","ready":500,"rss_per_conn_kib":20.0}
{"contender":"mutual","case":"idle_run2","requested":500,"ready":500,"rss_per_conn_kib":21.0,"established_ss":500}"#;
        let md = render(input);
        assert!(md.contains("### mutual alone"), "{md}");
        assert!(
            md.contains("| full handshakes/s, c=16, unpinned: --threads 2 vs --threads 1 (scaling factor) | 1200 | 800 | 1.50 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| full handshakes/s, c=16: audit log + metrics on vs off | 900 | 1000 | 0.90 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| &nbsp;&nbsp;per server CPU-second, on vs off | 990 | 1100 | 0.90 |"),
            "{md}"
        );
        assert!(
            md.contains("vs connections counted | 10 / 10 | 10 | – |"),
            "{md}"
        );
        assert!(
            md.contains("held of 500 wanted (seen established by ss: 500) | 500 | – | – |"),
            "{md}"
        );
        assert!(
            md.contains("two listeners vs one (`serve`) | 21.0 | 20.0 | 1.05 |"),
            "{md}"
        );
        // Cases that did not run get no row, and no section when none ran.
        assert!(!md.contains("requests/s, c=16 kept-alive: audit"), "{md}");
        assert!(!render(r#"{"contender":"mutual","status":"ok"}"#).contains("mutual alone"));
    }

    #[test]
    fn client_side_resumption_is_judged_against_both_references() {
        let input = r#"{"contender":"mutual","status":"ok"}
{"contender":"nginx","status":"ok"}
{"contender":"mutual","case":"connect_ref_full","ok":10,"upstream_cpu_us_per_conn":500.0}
{"contender":"mutual","case":"connect_ref_resumed","ok":10,"upstream_cpu_us_per_conn":200.0}
{"contender":"mutual","case":"connect_hs_c16","ok":10,"upstream_cpu_us_per_conn":230.0}
{"contender":"nginx","case":"connect_hs_c16","ok":10,"upstream_cpu_us_per_conn":480.0}"#;
        let md = render(input);
        assert!(
            md.contains("500 for a full handshake, 200 for a resumed one"),
            "{md}"
        );
        // (500 - 230) / (500 - 200) = 90%; (500 - 480) / 300 = 7%.
        assert!(md.contains("| mutual | 230 | 500 / 200 | 90% |"), "{md}");
        assert!(md.contains("| nginx | 480 | 500 / 200 | 7% |"), "{md}");
        // With the X25519MLKEM768 references, mutual's row is read against them, the others not.
        let pq = format!(
            "{input}\n{}\n{}",
            r#"{"contender":"mutual","case":"connect_ref_full_mlkem","ok":10,"upstream_cpu_us_per_conn":600.0}"#,
            r#"{"contender":"mutual","case":"connect_ref_resumed_mlkem","ok":10,"upstream_cpu_us_per_conn":230.0}"#
        );
        let md = render(&pq);
        assert!(md.contains("negotiates: 600 and 230"), "{md}");
        assert!(md.contains("| mutual | 230 | 600 / 230 | 100% |"), "{md}");
        assert!(md.contains("| nginx | 480 | 500 / 200 | 7% |"), "{md}");
        // Without the references there is no section.
        assert!(!render(
            r#"{"contender":"nginx","case":"connect_hs_c16","ok":1,"upstream_cpu_us_per_conn":4.0}"#
        )
        .contains("did each proxy resume"));
    }

    #[test]
    fn floor_section_derives_the_bounds() {
        let input = r#"{"contender":"mutual","status":"ok"}
{"mode":"crypto","x25519_per_s":20000.0,"server_handshake_crypto_us_x25519":200.0}
{"contender":"direct","case":"req_c16","ok":10,"latency":{"p50_us":200,"p99_us":300}}
{"contender":"mutual","case":"hs_c16","ok":10,"per_server_cpu_s":2000.0,"server_user_us_per_unit":300.0,"server_sys_us_per_unit":200.0}
{"contender":"mutual","case":"resume_c16","ok":10,"per_server_cpu_s":4000.0}
{"contender":"mutual","case":"req_c16","ok":10,"per_server_cpu_s":50000.0,"latency":{"p50_us":260,"p99_us":450}}
{"contender":"floor","case":"floor_hs_c16","ok":10,"per_server_cpu_s":10000.0,"server_user_us_per_unit":30.0,"server_sys_us_per_unit":70.0}
{"contender":"floor","case":"floor_req_c16","ok":10,"per_server_cpu_s":90000.0,"latency":{"p50_us":230,"p99_us":340}}
{"contender":"direct","case":"req_c16_open","ok":10,"rate":16000.0,"target_rate":16000.0,"latency":{"p50_us":60,"p99_us":110}}
{"contender":"mutual","case":"req_c16_open","ok":10,"rate":16000.0,"target_rate":16000.0,"latency":{"p50_us":95,"p99_us":170}}
{"contender":"floor","case":"floor_req_c16_open","ok":10,"rate":16000.0,"target_rate":16000.0,"latency":{"p50_us":80,"p99_us":150}}"#;
        let md = render(input);
        // The open loop: added over its own direct run (170 - 110, 150 - 110).
        assert!(
            md.contains("| requests at a fixed 16000/s (open loop), c=16 kept-alive: p99 latency µs added over the direct path (110 direct) | 60.0 | 40.0 |"),
            "{md}"
        );
        // The floor is no column of the main table.
        assert!(!md.contains("| floor |"), "{md}");
        assert!(
            md.contains("| &nbsp;&nbsp;server CPU µs per connection | 500 (300 user + 200 system) | 100 (30.0 user + 70.0 system) |"),
            "{md}"
        );
        // crypto + floor: 1e6 / (200 + 100) = 3333 full; 1e6 / (50 + 100) = 6667 resumed.
        assert!(
            md.contains("| full handshakes: crypto + floor | 3333 | 2000 | 60% |"),
            "{md}"
        );
        assert!(
            md.contains("| resumed handshakes: crypto + floor | 6667 | 4000 | 60% |"),
            "{md}"
        );
        assert!(md.contains("(crypto / (crypto + floor)): 67%"), "{md}");
        assert!(
            md.contains("at most (crypto + floor bounds): 2.00; mutual: 2.00"),
            "{md}"
        );
        assert!(
            md.contains("beyond crypto + floor: 200 full, 100 resumed"),
            "{md}"
        );
        assert!(
            md.contains("p99 latency µs added over the direct path (300 direct) | 150 | 40.0 |"),
            "{md}"
        );
    }

    #[test]
    fn rustls_alone_gives_the_no_code_of_ours_bounds() {
        let input = r#"{"contender":"mutual","status":"ok"}
{"mode":"crypto","x25519_per_s":20000.0,"server_handshake_crypto_us_x25519":200.0,"rustls_server_full_us":300.0,"rustls_server_resumed_us":100.0}
{"contender":"mutual","case":"hs_c16","ok":10,"per_server_cpu_s":2000.0}
{"contender":"mutual","case":"resume_c16","ok":10,"per_server_cpu_s":4000.0}
{"contender":"floor","case":"floor_hs_c16","ok":10,"per_server_cpu_s":10000.0}"#;
        let md = render(input);
        // The crypto table: 1e6 / 300 and 1e6 / 100 per second.
        assert!(md.contains("in memory: full mTLS handshakes (all of TLS 1.3's crypto, no sockets, no proxy) | 3333 |"), "{md}");
        assert!(
            md.contains("in memory: resumed handshakes | 10000 |"),
            "{md}"
        );
        // rustls alone + floor: 1e6 / (300 + 100) = 2500 full, 1e6 / (100 + 100) = 5000 resumed.
        assert!(
            md.contains("| full handshakes: rustls alone + floor | 2500 | 2000 | 80% |"),
            "{md}"
        );
        assert!(
            md.contains("| resumed handshakes: rustls alone + floor | 5000 | 4000 | 80% |"),
            "{md}"
        );
        assert!(
            md.contains("as a share of the crypto-only bound: 50%; resumed/full for it: 2.00"),
            "{md}"
        );
    }

    #[test]
    fn number_format() {
        assert_eq!(fmt_num(1234.56), "1235");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(0.5), "0.50");
    }
}
