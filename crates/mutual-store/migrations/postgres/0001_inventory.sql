-- The certificate inventory on PostgreSQL: the same schema as migrations/sqlite (one row per
-- issued certificate, serials UNIQUE so that two replicas can never record the same one).
CREATE TABLE IF NOT EXISTS certificates (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial       TEXT COLLATE "C" NOT NULL UNIQUE,  -- lowercase hex, no colons (bytewise order, as SQLite)
    name         TEXT    NOT NULL,          -- the NAME given at issue time (also the subject CN)
    subject      TEXT    NOT NULL,          -- RFC 4514 subject string
    sans         TEXT    NOT NULL,          -- JSON array of "dns:x", "ip:1.2.3.4", "uri:..."
    usage        TEXT    NOT NULL,          -- server | client | both
    not_before   BIGINT  NOT NULL,          -- Unix seconds
    not_after    BIGINT  NOT NULL,          -- Unix seconds
    status       TEXT    NOT NULL DEFAULT 'valid',  -- valid | revoked
    revoked_at   BIGINT,
    reason       TEXT,
    requested_by TEXT,
    sha256       TEXT    NOT NULL,          -- lowercase hex of the DER
    created_at   BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);
CREATE INDEX IF NOT EXISTS certificates_status ON certificates (status);

-- Small counters the CA must never reuse (the CRL number).
CREATE TABLE IF NOT EXISTS ca_counters (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);
