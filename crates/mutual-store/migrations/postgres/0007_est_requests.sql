-- EST enrollment requests held for manual approval (`ca serve --est-approval manual`,
-- crates/mutual-est): the device polls by sending the same CSR again, so the id is derived from
-- the CSR; an operator decides with `mutual cert approve|reject ID`. In the store so that any
-- replica answers the poll. Every decision is one `UPDATE ... WHERE status = 'pending'`.
CREATE TABLE IF NOT EXISTS est_requests (
    id           TEXT    PRIMARY KEY,   -- first 16 hex digits of SHA-256(CSR DER)
    label        TEXT    NOT NULL,      -- '' for /.well-known/est/
    requested_by TEXT    NOT NULL,      -- est:bootstrap:SN | est:token:JTI | est:reenroll:SERIAL
    names        TEXT    NOT NULL,      -- JSON array of the SANs the certificate would carry
    status       TEXT    NOT NULL,      -- pending | approved | rejected | issued
    serial       TEXT,                  -- once issued
    certificate  TEXT,                  -- the issued certificate (PEM), answered to a repeated poll
    created_at   BIGINT NOT NULL,
    decided_at   BIGINT,
    decided_by   TEXT
);
CREATE INDEX IF NOT EXISTS est_requests_status ON est_requests (status);
