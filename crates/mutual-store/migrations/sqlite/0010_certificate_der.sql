-- The certificate itself and its key type (the console's certificate page shows the extensions
-- and offers the PEM; `cert list --key-type` and the console's key-type filter). Written in the
-- issuance transaction with the row. Rows from before this migration have neither: only a
-- fingerprint was kept, so there is nothing to backfill them from; both stay NULL ("unknown").
-- `key_type` uses the `--key-type` words (`ecdsa-p256`, `ecdsa-p384`, `ed25519`) plus the RSA
-- size (`rsa-2048`, `rsa-3072`, `rsa-4096`), read from the certificate's public key.
ALTER TABLE certificates ADD COLUMN der BLOB;
ALTER TABLE certificates ADD COLUMN key_type TEXT;
-- The key-type filter in notAfter order (keyset paging), like the issuer filter of 0009; NULL
-- rows are indexed too, so "unknown" is a search as well.
CREATE INDEX IF NOT EXISTS certificates_key_type_not_after
    ON certificates (key_type, not_after, serial);
