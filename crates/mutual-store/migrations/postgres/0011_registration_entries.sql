-- Registration entries of the SPIFFE Workload API (`mutual agent entry create`, crates/mutual-agent,
-- docs/agent.md): which SPIFFE ID a workload gets, on which node (the agent's own SPIFFE ID), when
-- its Unix credentials match every selector. The CA signs an SVID for an agent only for an entry
-- assigned to that agent's node; in the store so that any replica answers.
CREATE TABLE IF NOT EXISTS registration_entries (
    id          TEXT    PRIMARY KEY,   -- 16 random hex digits
    spiffe_id   TEXT    NOT NULL,      -- the identity the workload gets
    selectors   TEXT    NOT NULL,      -- JSON array, sorted: ["unix:uid:1000", "unix:sha256:..."]
    node        TEXT    NOT NULL,      -- SPIFFE ID of the agent's node certificate
    ttl_secs    BIGINT  NOT NULL,      -- lifetime of each SVID
    created_at  BIGINT  NOT NULL,
    created_by  TEXT    NOT NULL       -- who made it (cli:USER)
);
CREATE INDEX IF NOT EXISTS registration_entries_node ON registration_entries (node, spiffe_id);
