-- The console's (and `cert list`'s) lookups that were still scans at a million rows
-- (docs/console.md, "Scale"): a certificate by its SHA-256 fingerprint, and certificates by a
-- prefix of who asked for them (`token:`, `acme:acct7`, `renew:`), which the query compares as
-- a bytewise range (`requested_by >= P AND requested_by < P'`), the order of SQLite's default
-- BINARY collation.
CREATE INDEX IF NOT EXISTS certificates_sha256 ON certificates (sha256);
CREATE INDEX IF NOT EXISTS certificates_requested_by ON certificates (requested_by, not_after, serial);
-- The issuer filter (`int-2`...) in notAfter order: with one issuer holding nearly every row, a
-- filter on another would otherwise walk the whole notAfter index to find none.
CREATE INDEX IF NOT EXISTS certificates_issuer_not_after ON certificates (issuer, not_after, serial);
