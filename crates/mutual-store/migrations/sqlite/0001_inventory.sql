-- The certificate inventory: one row per issued certificate. Serial numbers are unique so that
-- two processes issuing at once can never record the same serial twice.
CREATE TABLE IF NOT EXISTS certificates (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    serial       TEXT    NOT NULL UNIQUE,   -- lowercase hex, no colons
    name         TEXT    NOT NULL,          -- the NAME given at issue time (also the subject CN)
    subject      TEXT    NOT NULL,          -- RFC 4514 subject string
    sans         TEXT    NOT NULL,          -- JSON array of "dns:x", "ip:1.2.3.4", "uri:..."
    usage        TEXT    NOT NULL,          -- server | client | both
    not_before   INTEGER NOT NULL,          -- Unix seconds
    not_after    INTEGER NOT NULL,          -- Unix seconds
    status       TEXT    NOT NULL DEFAULT 'valid',  -- valid | revoked
    revoked_at   INTEGER,
    reason       TEXT,
    requested_by TEXT,
    sha256       TEXT    NOT NULL,          -- lowercase hex of the DER
    created_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);
CREATE INDEX IF NOT EXISTS certificates_status ON certificates (status);

-- Small counters the CA must never reuse (the CRL number).
CREATE TABLE IF NOT EXISTS ca_counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
