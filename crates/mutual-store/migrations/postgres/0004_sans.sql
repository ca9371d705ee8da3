-- Lookup by identity: one row per subject alternative name of each certificate, so that
-- `cert list --identity spiffe://...`, `--dns`, `--ip`, `--san` are an index lookup on
-- (kind, value) instead of a scan of every row's `sans` JSON. Filled in the same transaction as
-- the certificate row; `kind` is the part before the first ':' of the stored form ("dns", "ip",
-- "uri", "email"), `value` the rest, exactly as recorded (issuance normalises: DNS names in
-- lowercase, IPs in canonical form, SPIFFE IDs parsed). The same schema as migrations/sqlite.
CREATE TABLE IF NOT EXISTS certificate_sans (
    serial TEXT COLLATE "C" NOT NULL REFERENCES certificates (serial) ON DELETE CASCADE,
    kind   TEXT COLLATE "C" NOT NULL,
    value  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (serial, kind, value)
);
CREATE INDEX IF NOT EXISTS certificate_sans_kind_value ON certificate_sans (kind, value);

-- Backfill the certificates recorded before this migration from their `sans` JSON.
INSERT INTO certificate_sans (serial, kind, value)
SELECT c.serial,
       lower(split_part(j.s, ':', 1)),
       substr(j.s, strpos(j.s, ':') + 1)
FROM certificates AS c, json_array_elements_text(c.sans::json) AS j(s)
WHERE strpos(j.s, ':') > 1
ON CONFLICT DO NOTHING;
