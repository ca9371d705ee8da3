-- ACME (RFC 8555) state, kept in the store so that any CA replica answers any request
-- (crates/mutual-acme). Orders and authorizations are JSON documents with their status in a
-- column of its own: every transition is one `UPDATE ... WHERE status = <expected>`, so two
-- replicas racing on one object cannot both win.

-- Replay nonces handed out in Replay-Nonce; a nonce is spent by one DELETE (rows affected = 1).
CREATE TABLE IF NOT EXISTS acme_nonces (
    nonce   TEXT    PRIMARY KEY,
    expires BIGINT  NOT NULL            -- Unix seconds
);

CREATE TABLE IF NOT EXISTS acme_accounts (
    id         TEXT    PRIMARY KEY,     -- random, part of the account URL
    thumbprint TEXT    NOT NULL UNIQUE, -- RFC 7638 SHA-256 thumbprint of the account key
    jwk        TEXT    NOT NULL,        -- the account public key (JWK JSON)
    status     TEXT    NOT NULL,        -- valid | deactivated | revoked
    contact    TEXT    NOT NULL,        -- JSON array of URLs
    created_at BIGINT  NOT NULL
);

CREATE TABLE IF NOT EXISTS acme_orders (
    id         TEXT    PRIMARY KEY,
    account_id TEXT    NOT NULL REFERENCES acme_accounts (id),
    status     TEXT    NOT NULL,
    body       TEXT    NOT NULL,        -- JSON: identifiers, authz ids, expiry, certificate
    updated_at BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS acme_orders_account ON acme_orders (account_id);

CREATE TABLE IF NOT EXISTS acme_authzs (
    id         TEXT    PRIMARY KEY,
    account_id TEXT    NOT NULL REFERENCES acme_accounts (id),
    status     TEXT    NOT NULL,
    body       TEXT    NOT NULL,        -- JSON: identifier, challenges, expiry
    updated_at BIGINT  NOT NULL
);
