//! One ECDSA P-256 chain (root, intermediate, server leaf, client leaf) that every contender is
//! configured with, so they all do the same certificate work per handshake.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

fn params(cn: &str, days: i64, serial: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "mutual bench");
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(days);
    p.serial_number = Some(SerialNumber::from(serial));
    p
}

fn write(path: &Path, data: &str, secret: bool) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data.as_bytes())?;
    Ok(())
}

/// Writes root.pem, intermediate.pem, server.pem (leaf), server-chain.pem (leaf + intermediate),
/// server.key, client-chain.pem, client.key and haproxy.pem (chain + key, HAProxy's format).
pub fn generate(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let alg = &PKCS_ECDSA_P256_SHA256;

    let root_key = KeyPair::generate_for(alg)?;
    let mut rp = params("mutual bench root", 3650, 1);
    rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    rp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = rp.self_signed(&root_key)?;
    let root_issuer = Issuer::from_params(&rp, &root_key);

    let int_key = KeyPair::generate_for(alg)?;
    let mut ip = params("mutual bench intermediate", 1825, 2);
    ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ip.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ip.use_authority_key_identifier_extension = true;
    let int = ip.signed_by(&int_key, &root_issuer)?;
    let int_issuer = Issuer::from_params(&ip, &int_key);

    let leaf = |cn: &str,
                serial: u64,
                eku: ExtendedKeyUsagePurpose,
                sans: Vec<SanType>|
     -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate_for(alg)?;
        let mut p = params(cn, 30, serial);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![eku];
        p.subject_alt_names = sans;
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &int_issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server, server_key) = leaf(
        "localhost",
        3,
        ExtendedKeyUsagePurpose::ServerAuth,
        vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        ],
    )?;
    let (client, client_key) = leaf(
        "bench-client",
        4,
        ExtendedKeyUsagePurpose::ClientAuth,
        vec![
            SanType::DnsName("bench-client.internal".try_into()?),
            SanType::URI("spiffe://bench.example/client".try_into()?),
        ],
    )?;

    let int_pem = int.pem();
    write(&out.join("root.pem"), &root.pem(), false)?;
    write(&out.join("intermediate.pem"), &int_pem, false)?;
    write(&out.join("server.pem"), &server, false)?;
    write(
        &out.join("server-chain.pem"),
        &format!("{server}{int_pem}"),
        false,
    )?;
    write(&out.join("server.key"), &server_key, true)?;
    write(
        &out.join("client-chain.pem"),
        &format!("{client}{int_pem}"),
        false,
    )?;
    write(&out.join("client.key"), &client_key, true)?;
    write(
        &out.join("haproxy.pem"),
        &format!("{server}{int_pem}{server_key}"),
        true,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn chain_files_parse_and_keys_are_private() {
        let dir = std::env::temp_dir().join(format!("loadgen-certs-{}", std::process::id()));
        generate(&dir).unwrap();
        let chain: Vec<_> = CertificateDer::pem_file_iter(dir.join("client-chain.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chain.len(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("client.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
