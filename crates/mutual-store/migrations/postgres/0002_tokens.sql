-- One-time enrollment tokens already spent: the jti is inserted in the same transaction as the
-- certificate it paid for (INSERT ... ON CONFLICT DO NOTHING), so across replicas a token pays
-- for exactly one certificate and a failed issuance leaves it unspent.
CREATE TABLE IF NOT EXISTS tokens_used (
    jti     TEXT   PRIMARY KEY,         -- the token's 128-bit random id, lowercase hex
    used_at BIGINT NOT NULL,            -- Unix seconds
    serial  TEXT   NOT NULL             -- the certificate issued for it
);

-- Who revoked a certificate through the online CA (`api-revoke:<identity>`).
ALTER TABLE certificates ADD COLUMN IF NOT EXISTS revoked_by TEXT;
