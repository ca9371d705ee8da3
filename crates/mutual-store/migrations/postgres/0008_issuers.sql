-- Several issuing intermediates (`mutual ca rotate-intermediate`): each certificate records the
-- id of the intermediate that signed it, so that each issuer's CRL lists only its own
-- certificates and `cert list` can say who signed what. Rows from before this migration were all
-- signed by the intermediate `ca init` made, whose id is 'int-1' (the DEFAULT is the backfill).
ALTER TABLE certificates ADD COLUMN IF NOT EXISTS issuer TEXT NOT NULL DEFAULT 'int-1';
CREATE INDEX IF NOT EXISTS certificates_issuer_status ON certificates (issuer, status);

-- The current CRL of every issuer but the first (whose CRL stays in current_crl, so stores and
-- replicas from before this migration keep serving the same bytes). Replaced only by a higher
-- number, as current_crl.
CREATE TABLE IF NOT EXISTS issuer_crls (
    issuer      TEXT    PRIMARY KEY,
    number      BIGINT  NOT NULL,
    der         BYTEA   NOT NULL,
    this_update BIGINT  NOT NULL,       -- Unix seconds
    next_update BIGINT  NOT NULL        -- Unix seconds
);
