-- Per-day rollups for the Dashboard REST endpoints (swell/rollups.py), written with each part.
-- Memberships, not counters: a user seen in many parts of a day is one row, so distinct counts
-- over any range are exact, and deleting a user deletes their rows.
CREATE TABLE rollup_user_days (
    project_id INTEGER NOT NULL,
    day INTEGER NOT NULL,
    amplitude_id INTEGER NOT NULL,
    PRIMARY KEY (project_id, day, amplitude_id)) WITHOUT ROWID;
CREATE INDEX rollup_user_days_user ON rollup_user_days (project_id, amplitude_id);
CREATE TABLE rollup_user_groups (
    project_id INTEGER NOT NULL,
    group_by TEXT NOT NULL,
    day INTEGER NOT NULL,
    value TEXT NOT NULL,
    amplitude_id INTEGER NOT NULL,
    PRIMARY KEY (project_id, group_by, day, value, amplitude_id)) WITHOUT ROWID;
CREATE INDEX rollup_user_groups_user ON rollup_user_groups (project_id, amplitude_id);
CREATE TABLE rollup_first_days (
    project_id INTEGER NOT NULL,
    amplitude_id INTEGER NOT NULL,
    day INTEGER NOT NULL,
    PRIMARY KEY (project_id, amplitude_id)) WITHOUT ROWID;
CREATE INDEX rollup_first_days_day ON rollup_first_days (project_id, day);
CREATE TABLE rollup_sessions (
    project_id INTEGER NOT NULL,
    amplitude_id INTEGER NOT NULL,
    session_id INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (project_id, amplitude_id, session_id)) WITHOUT ROWID;
CREATE INDEX rollup_sessions_start ON rollup_sessions (project_id, first_ms);
CREATE TABLE rollup_event_types (
    project_id INTEGER NOT NULL,
    day INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    events INTEGER NOT NULL,
    PRIMARY KEY (project_id, day, event_type)) WITHOUT ROWID;
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    date TEXT NOT NULL,
    label TEXT NOT NULL,
    details TEXT NOT NULL,
    chart_id TEXT);
CREATE INDEX annotations_project ON annotations (project_id, date);
