//! `mutual serve` against real clients (curl, openssl s_client, Python's ssl, rustls): a valid
//! client certificate gets the backend's 200; no certificate, another CA, expired, revoked,
//! server-purpose and not-allowed certificates are rejected, each with its exact reason in the
//! audit log and in `mutual_handshakes_total`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;
use proxy_common::*;

#[test]
fn curl_matrix() {
    let (fx, _, proxy) = serve_fixture(&[]);
    run_matrix(&proxy, &fx, |leaf| {
        let (ok, code, body) = curl(proxy.port, &fx.pki.root, leaf);
        (
            ok && code == "200" && body == BACKEND_BODY,
            format!("exit ok={ok} code={code} body={body:?}"),
        )
    });
    // The soonest client-certificate expiry per identity is exported.
    let m = proxy.metrics();
    assert!(
        m.contains(&format!(
            "mutual_peer_cert_expiry_timestamp_seconds{{listener=\"serve\",identity=\"{OK_ID}\"}}"
        )),
        "{m}"
    );
    assert!(
        m.contains("mutual_cert_expiry_timestamp_seconds{listener=\"serve\",role=\"server\"}"),
        "{m}"
    );
    assert!(m.contains("mutual_handshake_duration_seconds_count{listener=\"serve\"}"));
}

#[test]
fn openssl_s_client_matrix() {
    let (fx, _, proxy) = serve_fixture(&[]);
    run_matrix(&proxy, &fx, |leaf| {
        let (_, out) = s_client(proxy.port, &fx.pki.root, leaf);
        (
            out.contains("HTTP/1.0 200 OK") && out.contains(BACKEND_BODY),
            out,
        )
    });
}

#[test]
fn python_ssl_matrix() {
    let (fx, _, proxy) = serve_fixture(&[]);
    run_matrix(&proxy, &fx, |leaf| {
        let out = python(proxy.port, &fx.pki.root, leaf);
        (out.starts_with("HTTP/1.0 200"), out)
    });
}

#[test]
fn rustls_matrix_and_policy_file() {
    // The allow rule comes from a policy file here instead of a flag.
    let fx = fixture();
    let be = http_backend();
    let policy = ok_policy(&fx);
    let (crl, policy) = (fx.crl.display().to_string(), policy.display().to_string());
    let extra = ["--crl", &crl, "--crl-leaf-only", "--policy", &policy];
    let mut args = tls_args(&fx.server.cert, &fx.server.key, &fx.pki.root, &extra);
    args.extend(["--name".to_string(), "serve".to_string()]);
    let proxy = spawn_proxy("serve", "--backend", &be.addr.to_string(), &args);
    run_matrix(&proxy, &fx, |leaf| {
        let cfg = rustls_config(&fx.pki.root, leaf);
        let r = rustls_get(proxy.addr(), &cfg);
        (
            matches!(&r, Ok((200, b)) if b == BACKEND_BODY),
            format!("{r:?}"),
        )
    });
}
