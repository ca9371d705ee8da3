-- One-time enrollment tokens already spent (the online CA, `POST /v1/sign`). A token's jti is
-- inserted in the same transaction as the certificate it paid for, so a replay hits the
-- PRIMARY KEY and a failed issuance leaves the token unspent.
CREATE TABLE IF NOT EXISTS tokens_used (
    jti     TEXT    PRIMARY KEY,        -- the token's 128-bit random id, lowercase hex
    used_at INTEGER NOT NULL,           -- Unix seconds
    serial  TEXT    NOT NULL            -- the certificate issued for it
);

-- Who revoked a certificate through the online CA (`api-revoke:<identity>`); NULL for a
-- revocation by `mutual cert revoke`. Kept apart from requested_by, which says who asked for
-- the certificate and must survive its revocation.
ALTER TABLE certificates ADD COLUMN revoked_by TEXT;
