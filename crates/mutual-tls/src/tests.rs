//! Real TLS 1.3 handshakes in memory (rustls connections pumped through buffers) between configs
//! built by this crate, with certificates from throwaway PKIs: each failure is checked on both
//! sides, as the verifying side names it and as the refused side learns it from the alert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mutual_test::{LeafOpts, Purpose as LeafPurpose, TestPki};
use rustls::{ClientConnection, ServerConnection};

use super::*;

struct Outcome {
    server: Result<(), rustls::Error>,
    client: Result<(), rustls::Error>,
    sconn: ServerConnection,
    cconn: ClientConnection,
}

/// Runs a handshake to completion or failure, delivering alerts both ways.
fn handshake(server: &Arc<rustls::ServerConfig>, client: &ClientMaterial) -> Outcome {
    handshake_cfg(server, client.config.clone(), client.server_name.clone())
}

/// Moves what `from` has to write into `to` (unless `to` already failed, its error then in
/// `err`); whether anything was written.
fn flight<F, T>(
    from: &mut rustls::ConnectionCommon<F>,
    to: &mut rustls::ConnectionCommon<T>,
    err: &mut Option<rustls::Error>,
) -> bool {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    if !buf.is_empty() && err.is_none() {
        let mut rd = &buf[..];
        while !rd.is_empty() {
            if to.read_tls(&mut rd).unwrap() == 0 {
                break;
            }
            if let Err(e) = to.process_new_packets() {
                *err = Some(e);
                break;
            }
        }
    }
    !buf.is_empty()
}

/// Lets the client read what the server wrote after the handshake (its session tickets).
fn deliver_tickets(o: &mut Outcome) {
    let mut buf = Vec::new();
    while o.sconn.wants_write() {
        o.sconn.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        o.cconn.read_tls(&mut rd).unwrap();
        o.cconn.process_new_packets().unwrap();
    }
}

fn handshake_cfg(
    server: &Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
) -> Outcome {
    let cconn = ClientConnection::new(client, name).unwrap();
    pump(server, cconn)
}

/// Runs the handshake of an already created client connection (its ClientHello written, its
/// ticket taken) against a new server connection.
fn pump(server: &Arc<rustls::ServerConfig>, mut cconn: ClientConnection) -> Outcome {
    let mut sconn = ServerConnection::new(server.clone()).unwrap();
    let (mut serr, mut cerr) = (None, None);
    for _ in 0..20 {
        let moved_c = flight(&mut cconn, &mut sconn, &mut serr);
        let moved_s = flight(&mut sconn, &mut cconn, &mut cerr);
        if !moved_c && !moved_s {
            break;
        }
    }
    let server = match serr {
        Some(e) => Err(e),
        None if sconn.is_handshaking() => Err(rustls::Error::HandshakeNotComplete),
        None => Ok(()),
    };
    let client = match cerr {
        Some(e) => Err(e),
        None if cconn.is_handshaking() => Err(rustls::Error::HandshakeNotComplete),
        None => Ok(()),
    };
    Outcome {
        server,
        client,
        sconn,
        cconn,
    }
}

fn reason_of(r: &Result<(), rustls::Error>) -> Reason {
    match r {
        Ok(()) => Reason::Ok,
        Err(e) => classify_rustls_error(e),
    }
}

struct Fixture {
    pki: TestPki,
    server: ServerMaterial,
}

fn fixture(name: &str) -> Fixture {
    let pki = TestPki::new(name);
    let srv = pki.leaf(
        "server",
        LeafOpts::new("server")
            .san("dns:server.test")
            .san("ip:127.0.0.1")
            .san("uri:spiffe://example.org/server")
            .server(),
    );
    let server = build_server_config(&ServerSettings {
        cert: srv.cert,
        key: srv.key,
        ca: pki.root.clone(),
        ..Default::default()
    })
    .unwrap();
    Fixture { pki, server }
}

fn client_for(f: &Fixture, stem: &str, opts: LeafOpts, name: &str) -> ClientMaterial {
    client_of(&f.pki, &f.pki.leaf(stem, opts), name)
}

/// A client presenting `leaf`, trusting `pki`'s root, expecting the server name `name`.
fn client_of(pki: &TestPki, leaf: &mutual_test::Leaf, name: &str) -> ClientMaterial {
    build_client_config(
        &ClientSettings {
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
            ca: pki.root.clone(),
            server_name: Some(name.to_string()),
            ..Default::default()
        },
        "127.0.0.1",
    )
    .unwrap()
}

#[test]
fn mutual_handshake_succeeds_and_reports_identity_and_parameters() {
    let f = fixture("ok");
    let c = client_for(
        &f,
        "client",
        LeafOpts::new("web").san("uri:spiffe://example.org/ns/prod/sa/web"),
        "server.test",
    );
    let o = handshake(&f.server.config, &c);
    assert!(
        o.server.is_ok() && o.client.is_ok(),
        "{:?} {:?}",
        o.server,
        o.client
    );
    let id = VerifiedPeer::of(&o.sconn, Wanted::default(), None)
        .unwrap()
        .id;
    assert_eq!(
        id.spiffe.as_deref(),
        Some("spiffe://example.org/ns/prod/sa/web")
    );
    assert_eq!(id.serial, c.cert_serial);
    let facts = TlsFacts::of(&o.sconn);
    assert_eq!(facts.version, "TLSv1.3");
    assert_eq!(facts.cipher, "TLS13_AES_128_GCM_SHA256");
    assert_eq!(facts.group, "X25519MLKEM768");
    assert!(!facts.resumed);
    assert!(f.server.cert_not_after > 0 && !f.server.cert_serial.is_empty());
    assert!(f
        .server
        .recheck_peer(o.sconn.peer_certificates().unwrap())
        .is_ok());
    // The server is reachable by IP and by its SPIFFE ID too.
    let by_ip = client_for(&f, "client2", LeafOpts::new("c2"), "127.0.0.1");
    assert!(handshake(&f.server.config, &by_ip).client.is_ok());
}

#[test]
fn no_client_certificate() {
    let f = fixture("nocert");
    let c = build_client_config(
        &ClientSettings {
            ca: f.pki.root.clone(),
            server_name: Some("server.test".into()),
            ..Default::default()
        },
        "127.0.0.1",
    )
    .unwrap();
    let o = handshake(&f.server.config, &c);
    assert_eq!(reason_of(&o.server), Reason::NoClientCert);
    assert_eq!(reason_of(&o.client), Reason::NoClientCert);
}

#[test]
fn client_certificate_failures_are_named_on_both_sides() {
    let f = fixture("fail");
    let other = TestPki::new("other");
    let cases: Vec<(&str, ClientMaterial, Reason)> = vec![
        (
            "expired",
            client_for(&f, "expired", LeafOpts::new("e").expired(), "server.test"),
            Reason::Expired,
        ),
        (
            "not yet valid",
            client_for(&f, "nyv", LeafOpts::new("n").not_yet_valid(), "server.test"),
            Reason::NotYetValid,
        ),
        (
            "server-only EKU",
            client_for(&f, "srvonly", LeafOpts::new("s").server(), "server.test"),
            Reason::WrongPurpose,
        ),
        (
            "unknown CA",
            {
                let leaf = other.leaf("x", LeafOpts::new("x"));
                build_client_config(
                    &ClientSettings {
                        cert: leaf.cert,
                        key: leaf.key,
                        ca: f.pki.root.clone(),
                        server_name: Some("server.test".into()),
                        ..Default::default()
                    },
                    "127.0.0.1",
                )
                .unwrap()
            },
            Reason::UnknownCa,
        ),
    ];
    for (what, c, want) in cases {
        let o = handshake(&f.server.config, &c);
        assert_eq!(
            reason_of(&o.server),
            want,
            "server side, {what}: {:?}",
            o.server
        );
        // The refused client learns it from the alert (not-yet-valid travels as
        // certificate_expired, as RFC 8446 prescribes).
        let client_want = if want == Reason::NotYetValid {
            Reason::Expired
        } else {
            want
        };
        assert_eq!(
            reason_of(&o.client),
            client_want,
            "client side, {what}: {:?}",
            o.client
        );
    }
}

#[test]
fn describe_names_the_times() {
    let f = fixture("describe");
    let c = client_for(&f, "expired", LeafOpts::new("e").expired(), "server.test");
    let o = handshake(&f.server.config, &c);
    let d = describe(o.server.as_ref().unwrap_err());
    assert!(d.starts_with("certificate expired at 20"), "{d}");
    assert!(d.contains("Z, now 20"), "{d}");
}

#[test]
fn revocation_is_checked_for_the_whole_chain() {
    let pki = TestPki::new("crl");
    let srv = pki.leaf(
        "server",
        LeafOpts::new("server").san("dns:server.test").server(),
    );
    let good = pki.leaf("good", LeafOpts::new("good"));
    let bad = pki.leaf("bad", LeafOpts::new("bad"));
    pki.revoke(&bad);
    let int_crl = pki.crl("int.crl");
    let root_crl = pki.root_crl("root.crl", false);
    let server = |crls: Vec<std::path::PathBuf>, revocation| {
        build_server_config_with(
            &ServerSettings {
                cert: srv.cert.clone(),
                key: srv.key.clone(),
                ca: pki.root.clone(),
                crls,
                ..Default::default()
            },
            &TlsOptions {
                revocation,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let client = |leaf: &mutual_test::Leaf| client_of(&pki, leaf, "server.test");
    let full = server(vec![int_crl.clone(), root_crl], RevocationPolicy::default());
    assert_eq!(
        reason_of(&handshake(&full.config, &client(&good)).server),
        Reason::Ok
    );
    let o = handshake(&full.config, &client(&bad));
    assert_eq!(reason_of(&o.server), Reason::Revoked);
    assert_eq!(reason_of(&o.client), Reason::Revoked);

    // Only the intermediate's CRL: the intermediate's own status is unknown, so denied.
    let partial = server(vec![int_crl.clone()], RevocationPolicy::default());
    let o = handshake(&partial.config, &client(&good));
    assert_eq!(reason_of(&o.server), Reason::RevocationUnknown);
    assert_eq!(
        reason_of(&o.client),
        Reason::UnknownCa,
        "rustls sends unknown_ca for this"
    );
    let leaf_only = server(
        vec![int_crl],
        RevocationPolicy {
            leaf_only: true,
            ..Default::default()
        },
    );
    assert_eq!(
        reason_of(&handshake(&leaf_only.config, &client(&good)).server),
        Reason::Ok
    );
    assert_eq!(
        reason_of(&handshake(&leaf_only.config, &client(&bad)).server),
        Reason::Revoked
    );
}

#[test]
fn server_name_and_spiffe_checks_on_the_client() {
    let f = fixture("names");
    let wrong = client_for(&f, "c1", LeafOpts::new("c"), "other.test");
    let o = handshake(&f.server.config, &wrong);
    assert_eq!(reason_of(&o.client), Reason::NameMismatch);
    assert_eq!(
        reason_of(&o.server),
        Reason::Other,
        "bad_certificate alert is `other`"
    );

    let leaf = f.pki.leaf("c2", LeafOpts::new("c"));
    let spiffe = |id: &str| {
        build_client_config(
            &ClientSettings {
                cert: leaf.cert.clone(),
                key: leaf.key.clone(),
                ca: f.pki.root.clone(),
                expect_spiffe: Some(id.into()),
                ..Default::default()
            },
            "127.0.0.1",
        )
        .unwrap()
    };
    assert!(
        handshake(&f.server.config, &spiffe("spiffe://example.org/server"))
            .client
            .is_ok()
    );
    let o = handshake(&f.server.config, &spiffe("spiffe://example.org/other"));
    assert_eq!(reason_of(&o.client), Reason::NameMismatch);
    let d = describe(o.client.as_ref().unwrap_err());
    assert!(
        d.contains("spiffe://example.org/other") && d.contains("spiffe://example.org/server"),
        "{d}"
    );
    assert!(matches!(
        build_client_config(
            &ClientSettings {
                ca: f.pki.root.clone(),
                expect_spiffe: Some("spiffe://*/x".into()),
                ..Default::default()
            },
            "h"
        ),
        Err(TlsError::InvalidName { .. })
    ));
}

#[test]
fn protocol_version_and_no_shared_group() {
    let f = fixture("proto");
    let leaf = f.pki.leaf("c", LeafOpts::new("c"));
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in load::load_certs(&f.pki.root).unwrap() {
            r.add(c).unwrap();
        }
        Arc::new(r)
    };
    let certs = load::load_certs(&leaf.cert).unwrap();
    let key = load::load_key(&leaf.key).unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(provider(true)))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(certs.clone(), key.clone_key())
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("server.test").unwrap();
    let o = handshake_cfg(&f.server.config, Arc::new(tls12), name.clone());
    assert_eq!(
        reason_of(&o.server),
        Reason::ProtocolVersion,
        "{:?}",
        o.server
    );
    assert_eq!(
        reason_of(&o.client),
        Reason::ProtocolVersion,
        "{:?}",
        o.client
    );

    let mlkem_only = rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::MLKEM1024],
        ..provider(false)
    };
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(mlkem_only))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let o = handshake_cfg(&f.server.config, Arc::new(cfg), name);
    assert_eq!(
        reason_of(&o.server),
        Reason::NoSharedCipher,
        "{:?}",
        o.server
    );
    assert_eq!(
        reason_of(&o.client),
        Reason::NoSharedCipher,
        "{:?}",
        o.client
    );
}

#[test]
fn plain_http_is_malformed() {
    let f = fixture("http");
    let mut s = ServerConnection::new(f.server.config.clone()).unwrap();
    let mut rd: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    s.read_tls(&mut rd).unwrap();
    let e = s.process_new_packets().unwrap_err();
    assert_eq!(classify_rustls_error(&e), Reason::Malformed);
}

#[test]
fn io_errors() {
    use std::io::{Error, ErrorKind};
    assert_eq!(
        classify_io_error(&Error::from(ErrorKind::TimedOut)),
        Reason::HandshakeTimeout
    );
    assert_eq!(
        classify_io_error(&Error::from(ErrorKind::UnexpectedEof)),
        Reason::Other
    );
    assert_eq!(
        classify_io_error(&Error::from(ErrorKind::ConnectionReset)),
        Reason::Other
    );
    let wrapped = Error::new(
        ErrorKind::InvalidData,
        rustls::Error::NoCertificatesPresented,
    );
    assert_eq!(classify_io_error(&wrapped), Reason::NoClientCert);
    assert_eq!(describe_io(&wrapped), "the client sent no certificate");
}

#[test]
fn alerts_from_the_peer() {
    use rustls::AlertDescription as A;
    for (alert, want) in [
        (A::CertificateRequired, Reason::NoClientCert),
        (A::UnknownCA, Reason::UnknownCa),
        (A::CertificateExpired, Reason::Expired),
        (A::CertificateRevoked, Reason::Revoked),
        (A::BadCertificate, Reason::Other),
        (A::UnsupportedCertificate, Reason::WrongPurpose),
        (A::ProtocolVersion, Reason::ProtocolVersion),
        (A::HandshakeFailure, Reason::NoSharedCipher),
        (A::InsufficientSecurity, Reason::NoSharedCipher),
        (A::AccessDenied, Reason::PolicyDenied),
        (A::DecodeError, Reason::Malformed),
    ] {
        assert_eq!(
            classify_rustls_error(&rustls::Error::AlertReceived(alert)),
            want,
            "{alert:?}"
        );
    }
    let d = describe(&rustls::Error::AlertReceived(A::CertificateRequired));
    assert!(d.ends_with("certificate_required"), "{d}");
    let d = describe(&rustls::Error::AlertReceived(A::UnknownCA));
    assert!(d.ends_with("unknown_ca"), "{d}");
}

#[test]
fn resumption_ends_when_the_config_is_rebuilt() {
    let pki = TestPki::new("resume");
    let srv = pki.leaf(
        "server",
        LeafOpts::new("server").san("dns:server.test").server(),
    );
    let settings = ServerSettings {
        cert: srv.cert.clone(),
        key: srv.key.clone(),
        ca: pki.root.clone(),
        ..Default::default()
    };
    let first = build_server_config(&settings).unwrap();
    let client = client_of(&pki, &pki.leaf("c", LeafOpts::new("c")), "server.test");
    let mut o = handshake(&first.config, &client);
    assert!(o.client.is_ok());
    deliver_tickets(&mut o);
    let again = handshake(&first.config, &client);
    assert!(TlsFacts::of(&again.sconn).resumed, "same config resumes");
    let rebuilt = build_server_config(&settings).unwrap();
    let after = handshake(&rebuilt.config, &client);
    assert!(after.server.is_ok());
    assert!(
        !TlsFacts::of(&after.sconn).resumed,
        "a rebuilt config must not resume old tickets"
    );
}

#[test]
fn a_client_keeps_enough_tickets_for_many_connections_at_once() {
    // rustls's own store keeps 8 tickets per server: of 16 connections opened at once, 8 would
    // find none and make a full handshake. mutual's store keeps `tickets::TICKETS_PER_SERVER`.
    let f = fixture("tickets");
    let client = client_for(&f, "c", LeafOpts::new("c"), "server.test");
    // One at a time: each resumed connection uses one ticket and is given two (the server's
    // base config), so the store grows by one per connection.
    for i in 0..20 {
        let mut o = handshake(&f.server.config, &client);
        assert!(o.server.is_ok() && o.client.is_ok(), "connection {i}");
        assert_eq!(TlsFacts::of(&o.sconn).resumed, i > 0, "connection {i}");
        deliver_tickets(&mut o);
    }
    // Sixteen at once: every ClientHello is written (and its ticket taken) before any completes.
    let at_once: Vec<ClientConnection> = (0..16)
        .map(|_| ClientConnection::new(client.config.clone(), client.server_name.clone()).unwrap())
        .collect();
    let resumed = at_once
        .into_iter()
        .map(|c| pump(&f.server.config, c))
        .filter(|o| o.server.is_ok() && TlsFacts::of(&o.sconn).resumed)
        .count();
    assert_eq!(resumed, 16, "every connection opened at once resumes");
}

#[test]
fn loading_errors_name_the_file() {
    let pki = TestPki::new("load");
    let leaf = pki.leaf("srv", LeafOpts::new("s").server());
    let other = pki.leaf("other", LeafOpts::new("o").purpose(LeafPurpose::Both));
    let base = ServerSettings {
        cert: leaf.cert.clone(),
        key: leaf.key.clone(),
        ca: pki.root.clone(),
        ..Default::default()
    };
    let err = |s: ServerSettings| build_server_config(&s).err().unwrap().to_string();
    let missing = pki.path("missing.pem");
    let e = err(ServerSettings {
        cert: missing.clone(),
        ..base.clone()
    });
    assert!(e.contains("missing.pem"), "{e}");
    let junk = pki.path("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    let e = err(ServerSettings {
        cert: junk.clone(),
        ..base.clone()
    });
    assert!(
        e.contains("junk.pem") && e.contains("no certificate"),
        "{e}"
    );
    let e = err(ServerSettings {
        key: leaf.cert.clone(),
        ..base.clone()
    });
    assert!(e.contains("srv.pem") && e.contains("no private key"), "{e}");
    let e = build_server_config(&ServerSettings {
        key: other.key.clone(),
        ..base.clone()
    })
    .err()
    .unwrap();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
    let e = err(ServerSettings {
        ca: junk.clone(),
        ..base.clone()
    });
    assert!(
        e.contains("junk.pem") && e.contains("no certificate"),
        "{e}"
    );
    let badcrl = pki.path("bad.crl");
    std::fs::write(
        &badcrl,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let e = err(ServerSettings {
        crls: vec![badcrl],
        ..base.clone()
    });
    assert!(e.contains("bad.crl") && e.contains("CRL"), "{e}");
    let e = err(ServerSettings {
        crls: vec![junk],
        ..base.clone()
    });
    assert!(e.contains("junk.pem") && e.contains("no CRL"), "{e}");
    // And the secret never shows up in an error.
    let key_text = std::fs::read_to_string(&leaf.key).unwrap();
    let body = key_text.lines().nth(1).unwrap();
    let e = err(ServerSettings {
        cert: leaf.key.clone(),
        ..base
    });
    assert!(!e.contains(body), "{e}");
}

/// RSA below 2048 bits, or not in whole bytes (a 2052-bit modulus read as 2056 bytes-rounded
/// and was accepted): `weak_key`.
#[test]
fn weak_rsa_leaf_is_weak_key() {
    if !mutual_test::have("openssl") {
        eprintln!("openssl not found; skipping");
        return;
    }
    let pki = TestPki::new("weak");
    for (bits, want) in [
        (1024, "1024-bit RSA"),
        (
            2052,
            "2052-bit RSA key (the modulus must be a whole number of bytes",
        ),
    ] {
        let key = pki.path(&format!("rsa{bits}.pem"));
        let spki = pki.path(&format!("rsa{bits}.der"));
        let ok = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
            .arg(format!("rsa_keygen_bits:{bits}"))
            .arg("-out")
            .arg(&key)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
            && std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&spki)
                .status()
                .unwrap()
                .success();
        assert!(ok);
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&std::fs::read(&spki).unwrap()).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["weak.test".to_string()]).unwrap();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&spki, &pki.root_issuer()).unwrap();
        let out = verify_chain(&VerifyRequest {
            leaf: cert.der().clone(),
            roots: load::load_certs(&pki.root).unwrap(),
            purpose: Purpose::Client,
            ..Default::default()
        });
        assert_eq!(out.reason, Reason::WeakKey, "{}", out.detail);
        assert!(out.detail.contains(want), "{}", out.detail);
    }
}

#[test]
fn verify_chain_reports_the_path() {
    let pki = TestPki::new("chain");
    let leaf = pki.leaf("l", LeafOpts::new("l").san("dns:l.test").server());
    let certs = load::load_certs(&leaf.cert).unwrap();
    let out = verify_chain(&VerifyRequest {
        leaf: certs[0].clone(),
        intermediates: certs[1..].to_vec(),
        roots: load::load_certs(&pki.root).unwrap(),
        purpose: Purpose::Server,
        name: Some(PeerName::parse("dns:l.test").unwrap()),
        ..Default::default()
    });
    assert!(out.valid, "{}", out.detail);
    assert_eq!(out.reason, Reason::Ok);
    let roles: Vec<_> = out.chain.iter().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["leaf", "intermediate", "root"]);
    assert_eq!(out.chain[0].serial, leaf.serial_hex);
    assert!(out.chain[2].subject.contains("chain Root"));
    assert_eq!(
        PeerName::parse("spiffe://a/b").unwrap(),
        PeerName::Uri("spiffe://a/b".into())
    );
    assert!(matches!(
        PeerName::parse("ip:10.0.0.1").unwrap(),
        PeerName::Server(_)
    ));
}

#[test]
fn signature_only_accepts_any_server_certificate_and_records_it() {
    // A server whose certificate comes from a CA the client has never seen.
    let a = TestPki::new("sigonly-a");
    let b = TestPki::new("sigonly-b");
    let srv = b.leaf(
        "server",
        LeafOpts::new("server").san("dns:server.test").server(),
    );
    let server = build_server_config(&ServerSettings {
        cert: srv.cert.clone(),
        key: srv.key,
        ca: a.root.clone(),
        ..Default::default()
    })
    .unwrap();
    let leaf = a.leaf("c", LeafOpts::new("c"));
    let (certified, key) = load::certified_key(&provider(false), &leaf.cert, &leaf.key).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let verifier = verifiers::SignatureOnly::new(Arc::new(provider(false))).recording(Arc::new(
        move |ee: &rustls_pki_types::CertificateDer<'_>,
              _: &[rustls_pki_types::CertificateDer<'_>]| {
            sink.lock().unwrap().push(ee.as_ref().to_vec());
        },
    ));
    let cfg = client::build(client::ClientSpec {
        provider: Arc::new(provider(false)),
        versions: versions(false),
        server: client::ServerCheck::Verifier(Arc::new(verifier)),
        cert: client::ClientCert::Single(certified.cert.clone(), key),
        alpn: Vec::new(),
        resumption: false,
    })
    .unwrap();
    let name = rustls_pki_types::ServerName::try_from("server.test").unwrap();
    let o = handshake_cfg(&server.config, Arc::new(cfg), name.clone());
    assert_eq!(reason_of(&o.client), Reason::Ok, "{:?}", o.client);
    assert_eq!(reason_of(&o.server), Reason::Ok, "{:?}", o.server);
    let served = load::load_certs(&srv.cert).unwrap();
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[served[0].as_ref().to_vec()]
    );

    // Enroll's first contact takes it too; the pinned configuration (roots of A) does not.
    let o = handshake_cfg(
        &server.config,
        client::first_contact().unwrap(),
        name.clone(),
    );
    assert_eq!(reason_of(&o.server), Reason::NoClientCert, "{:?}", o.server);
    let roots_a = load::load_certs(&a.root).unwrap();
    let o = handshake_cfg(
        &server.config,
        client::pinned(&roots_a, None).unwrap(),
        name,
    );
    assert_eq!(reason_of(&o.client), Reason::UnknownCa, "{:?}", o.client);
    assert!(matches!(
        client::pinned(
            &[rustls_pki_types::CertificateDer::from(vec![1, 2, 3])],
            None
        ),
        Err(client::PinnedError::BadRoot(_))
    ));
}

#[test]
fn strict_profile_on_the_server_side_refuses_a_client_chain_that_breaks_a_rule() {
    let pki = TestPki::new("strict");
    let srv = pki.leaf(
        "server",
        LeafOpts::new("server").san("dns:server.test").server(),
    );
    let server = |profile: Profile| {
        build_server_config_with(
            &ServerSettings {
                cert: srv.cert.clone(),
                key: srv.key.clone(),
                ca: pki.root.clone(),
                ..Default::default()
            },
            &TlsOptions {
                profile,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let client = |stem: &str, san: &str| {
        client_of(
            &pki,
            &pki.leaf(stem, LeafOpts::new(stem).san(san)),
            "server.test",
        )
    };
    let (strict, compatible) = (server(Profile::Strict), server(Profile::Compatible));
    // A dNSName with an underscore: webpki accepts it, RFC 5280 4.2.1.6 does not.
    let bad = client("underscore", "dns:a_b.client.test");
    let o = handshake(&compatible.config, &bad);
    assert_eq!(reason_of(&o.server), Reason::Ok, "{:?}", o.server);
    let o = handshake(&strict.config, &bad);
    assert_eq!(reason_of(&o.server), Reason::Malformed, "{:?}", o.server);
    let why = describe(o.server.as_ref().unwrap_err());
    assert!(why.contains("san-dns-invalid"), "{why}");
    assert_eq!(strict.trust.profile(), Profile::Strict);
}

/// Connections presenting the same chain with the same parameters share one `VerifiedPeer`
/// (issue 20: one copy of a pooled or resuming client's chain and identity); another chain,
/// or the same chain resumed instead of verified, is another entry with its own facts.
#[test]
fn the_peer_cache_shares_a_peer_between_its_connections_and_tells_chains_apart() {
    let f = fixture("peercache");
    let web = client_for(&f, "web", LeafOpts::new("web"), "server.test");
    let api = client_for(&f, "api", LeafOpts::new("api"), "server.test");
    let cache = crate::PeerCache::default();
    let wanted = Wanted {
        chain: true,
        ..Wanted::default()
    };
    let peer = |c: &ClientMaterial| {
        let mut o = handshake(&f.server.config, c);
        assert!(o.server.is_ok() && o.client.is_ok(), "{:?}", o.server);
        deliver_tickets(&mut o);
        cache.peer_of(&o.sconn, wanted, None).unwrap()
    };
    let first = peer(&web);
    assert!(!first.tls.resumed);
    assert_eq!(first.id.cn.as_deref(), Some("web"));
    assert_eq!(first.chain.len(), 2, "leaf and intermediate");
    // The client now holds tickets: its next connections resume.
    let resumed = peer(&web);
    assert!(resumed.tls.resumed);
    assert!(
        !Arc::ptr_eq(&first, &resumed),
        "other TLS facts, other entry"
    );
    assert_eq!(resumed.id.sha256, first.id.sha256);
    assert_eq!(resumed.chain, first.chain);
    let again = peer(&web);
    assert!(
        Arc::ptr_eq(&resumed, &again),
        "the same chain resumed again: shared"
    );
    let other = peer(&api);
    assert_eq!(other.id.cn.as_deref(), Some("api"));
    assert_ne!(other.id.sha256, first.id.sha256);
    assert_eq!(cache.len(), 3);
    // Without the chain wanted nothing is compared, so nothing is remembered.
    let o = handshake(&f.server.config, &web);
    let plain = cache.peer_of(&o.sconn, Wanted::default(), None).unwrap();
    assert!(plain.chain.is_empty());
    assert_eq!(cache.len(), 3);
}
