-- Per-day rollups for the Dashboard REST endpoints (swell/rollups.py), written with each part,
-- as sql/sqlite/0006_rollups.sql. Values from events are bytea (text cannot hold U+0000).
CREATE TABLE rollup_user_days (
    project_id bigint NOT NULL,
    day integer NOT NULL,
    amplitude_id bigint NOT NULL,
    PRIMARY KEY (project_id, day, amplitude_id));
CREATE INDEX rollup_user_days_user ON rollup_user_days (project_id, amplitude_id);
CREATE TABLE rollup_user_groups (
    project_id bigint NOT NULL,
    group_by text NOT NULL,
    day integer NOT NULL,
    value bytea NOT NULL,
    amplitude_id bigint NOT NULL,
    PRIMARY KEY (project_id, group_by, day, value, amplitude_id));
CREATE INDEX rollup_user_groups_user ON rollup_user_groups (project_id, amplitude_id);
CREATE TABLE rollup_first_days (
    project_id bigint NOT NULL,
    amplitude_id bigint NOT NULL,
    day integer NOT NULL,
    PRIMARY KEY (project_id, amplitude_id));
CREATE INDEX rollup_first_days_day ON rollup_first_days (project_id, day);
CREATE TABLE rollup_sessions (
    project_id bigint NOT NULL,
    amplitude_id bigint NOT NULL,
    session_id bigint NOT NULL,
    first_ms bigint NOT NULL,
    last_ms bigint NOT NULL,
    PRIMARY KEY (project_id, amplitude_id, session_id));
CREATE INDEX rollup_sessions_start ON rollup_sessions (project_id, first_ms);
CREATE TABLE rollup_event_types (
    project_id bigint NOT NULL,
    day integer NOT NULL,
    event_type bytea NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (project_id, day, event_type));
CREATE TABLE annotations (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL,
    date text NOT NULL,
    label text NOT NULL,
    details text NOT NULL,
    chart_id text);
CREATE INDEX annotations_project ON annotations (project_id, date);
