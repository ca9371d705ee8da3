-- An operator's note on an External Account Binding key (`mutual acme eab create --label`):
-- which client or team it was made for, shown by `eab list`, so that the right key is the one
-- withdrawn. Never secret; absent for keys made before.
ALTER TABLE acme_eab ADD COLUMN label TEXT;
