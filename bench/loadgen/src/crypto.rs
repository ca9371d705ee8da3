//! The machine's limit: how fast aws-lc-rs does the operations an mTLS handshake and a bulk
//! transfer are made of, on one core, so each proxy figure can be read as a fraction of it.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::kem::{DecapsulationKey, ML_KEM_768};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use serde_json::{json, Value};

use crate::stats::round2;

/// Runs `op` repeatedly for about `secs` and returns operations per second. Errors abort: a
/// failing primitive would make every figure meaningless.
fn rate(secs: f64, mut op: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    // Warm caches and lazy initialisation outside the timed window.
    for _ in 0..10 {
        op()?;
    }
    let limit = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < limit {
        for _ in 0..16 {
            op()?;
        }
        n += 16;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn unspecified(what: &'static str) -> impl Fn(aws_lc_rs::error::Unspecified) -> anyhow::Error {
    move |_| anyhow!("aws-lc-rs {what} failed")
}

pub fn run(secs: f64) -> anyhow::Result<Value> {
    let rng = SystemRandom::new();
    let msg = [7u8; 64];

    let key =
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(unspecified("keygen"))?;
    let sign = rate(secs, || {
        key.sign(&rng, &msg).map_err(unspecified("sign"))?;
        Ok(())
    })?;
    let sig = key.sign(&rng, &msg).map_err(unspecified("sign"))?;
    let public = signature::UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_ASN1,
        key.public_key().as_ref().to_vec(),
    );
    let verify = rate(secs, || {
        public
            .verify(&msg, sig.as_ref())
            .map_err(unspecified("verify"))?;
        Ok(())
    })?;

    // What a TLS server does per handshake for X25519: a fresh key share and one agreement.
    let peer =
        EphemeralPrivateKey::generate(&X25519, &rng).map_err(unspecified("x25519 keygen"))?;
    let peer_pub = peer
        .compute_public_key()
        .map_err(unspecified("x25519 public"))?
        .as_ref()
        .to_vec();
    let x25519 = rate(secs, || {
        let mine =
            EphemeralPrivateKey::generate(&X25519, &rng).map_err(unspecified("x25519 keygen"))?;
        let _share = mine
            .compute_public_key()
            .map_err(unspecified("x25519 public"))?;
        agreement::agree_ephemeral(
            mine,
            UnparsedPublicKey::new(&X25519, &peer_pub),
            anyhow!("x25519 agree failed"),
            |_| Ok(()),
        )
    })?;

    // X25519MLKEM768: the server encapsulates to the client's key (the client generates and
    // decapsulates).
    let dk = DecapsulationKey::generate(&ML_KEM_768).map_err(unspecified("ML-KEM keygen"))?;
    let ek = dk
        .encapsulation_key()
        .map_err(unspecified("ML-KEM public"))?;
    let mlkem_encaps = rate(secs, || {
        ek.encapsulate()
            .map_err(unspecified("ML-KEM encapsulate"))?;
        Ok(())
    })?;
    let (ct, _) = ek
        .encapsulate()
        .map_err(unspecified("ML-KEM encapsulate"))?;
    let mlkem_decaps = rate(secs, || {
        dk.decapsulate(ct.as_ref().into())
            .map_err(unspecified("ML-KEM decapsulate"))?;
        Ok(())
    })?;
    let mlkem_keygen = rate(secs, || {
        DecapsulationKey::generate(&ML_KEM_768).map_err(unspecified("ML-KEM keygen"))?;
        Ok(())
    })?;

    // AES-128-GCM over full 16 KiB TLS records.
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &[9u8; 16]).map_err(unspecified("AES key"))?,
    );
    let mut record = vec![0u8; 16 * 1024];
    let mut counter = 0u64;
    let records = rate(secs, || {
        counter += 1;
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_be_bytes());
        let _tag = aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::empty(), &mut record)
            .map_err(unspecified("AES-GCM seal"))?;
        Ok(())
    })?;

    // A full server-side mTLS 1.3 handshake with our chain (client leaf + intermediate, root
    // trusted): one signature (CertificateVerify), three verifications (client CertificateVerify,
    // leaf by intermediate, intermediate by root) and the key exchange.
    let us = |r: f64| 1e6 / r;
    let hs_x25519_us = us(sign) + 3.0 * us(verify) + us(x25519);
    let hs_mlkem_us = hs_x25519_us + us(mlkem_encaps);
    Ok(json!({
        "mode": "crypto",
        "ecdsa_p256_sign_per_s": round2(sign),
        "ecdsa_p256_verify_per_s": round2(verify),
        "x25519_per_s": round2(x25519),
        "mlkem768_encaps_per_s": round2(mlkem_encaps),
        "mlkem768_decaps_per_s": round2(mlkem_decaps),
        "mlkem768_keygen_per_s": round2(mlkem_keygen),
        "aes128gcm_mb_per_s": round2(records * 16384.0 / 1e6),
        "server_handshake_crypto_us_x25519": round2(hs_x25519_us),
        "server_handshake_bound_per_s_x25519": round2(1e6 / hs_x25519_us),
        "server_handshake_bound_per_s_mlkem": round2(1e6 / hs_mlkem_us),
    }))
}
