-- The current CRL, signed once and stored so that every replica of the online CA serves the same
-- bytes (one row: id is always 1). A CRL is replaced only by one with a higher number.
CREATE TABLE IF NOT EXISTS current_crl (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    number      INTEGER NOT NULL,
    der         BLOB    NOT NULL,
    this_update INTEGER NOT NULL,       -- Unix seconds
    next_update INTEGER NOT NULL        -- Unix seconds
);

-- Inventory queries page by (not_after, serial) and filter by status and identity: indexes so
-- that a million rows are never scanned whole.
CREATE INDEX IF NOT EXISTS certificates_not_after_serial ON certificates (not_after, serial);
CREATE INDEX IF NOT EXISTS certificates_status_not_after ON certificates (status, not_after, serial);
CREATE INDEX IF NOT EXISTS certificates_name ON certificates (name);
CREATE INDEX IF NOT EXISTS certificates_subject ON certificates (subject);
