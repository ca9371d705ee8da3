-- Two indexes of 0001 are prefixes of indexes 0003 added: `certificates_not_after (not_after)` of
-- `certificates_not_after_serial (not_after, serial)`, and `certificates_status (status)` of
-- `certificates_status_not_after (status, not_after, serial)`. Every query the first two served
-- is served by the longer ones, while each issuance paid for keeping all four up to date (issue
-- 20: the CA's cost per certificate, docs/PERFORMANCE.md "The CA").
DROP INDEX IF EXISTS certificates_not_after;
DROP INDEX IF EXISTS certificates_status;
