-- Job leases (a claim holds a job until lease_until), the DSAR cost budget (so a restart does not
-- reset it), and part numbers handed out once (a failed seal's number is never reused).
ALTER TABLE jobs ADD COLUMN lease_until TEXT;
CREATE TABLE part_seqs (
    project_id INTEGER NOT NULL, hour INTEGER NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY (project_id, hour)) WITHOUT ROWID;
CREATE TABLE budget_charges (key TEXT NOT NULL, at REAL NOT NULL, cost INTEGER NOT NULL);
CREATE INDEX budget_charges_key_at ON budget_charges(key, at);
