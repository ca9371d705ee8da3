-- External Account Binding (RFC 8555 §7.3.4) for the ACME server: `mutual acme eab create`
-- makes a key id and an HMAC key; `ca serve --acme-require-eab` then accepts a new account only
-- with a binding signed by one of these keys, and each key binds exactly one account (the
-- conditional UPDATE that sets account_id decides, across replicas).
CREATE TABLE IF NOT EXISTS acme_eab (
    kid        TEXT    PRIMARY KEY,
    hmac_key   TEXT    NOT NULL,        -- base64url; needed to verify, so kept (the CA dir's trust)
    created_at BIGINT  NOT NULL,
    account_id TEXT,                    -- the account it bound, once used
    bound_at   BIGINT
);

-- Per-account rate limits count the orders an account created in the last hour, on any replica.
ALTER TABLE acme_orders ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE acme_authzs ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS acme_orders_account_created ON acme_orders (account_id, created_at);
