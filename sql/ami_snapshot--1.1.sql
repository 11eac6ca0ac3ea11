/* sql/ami_snapshot--1.1.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION ami_snapshot" to load this file. \quit

-- One row per ami_snapshot() attempt.  Rows are written by a background
-- worker in their own transaction, so a failed attempt is recorded even
-- though the calling statement raises an error.
CREATE TABLE @extschema@.ami_snapshot_history (
    id              bigserial PRIMARY KEY,
    request_id      text NOT NULL UNIQUE,
    name            text NOT NULL,
    status          text NOT NULL
                    CHECK (status IN ('running', 'succeeded', 'failed')),
    with_freeze     boolean NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    instance_id     text,
    region          text,
    volume_ids      text[],
    snapshot_ids    text[],
    start_lsn       pg_catalog.pg_lsn,
    stop_lsn        pg_catalog.pg_lsn,
    timeline        integer,
    frozen_ms       double precision,
    backup_label    text,
    tablespace_map  text,
    error_code      text,
    error_message   text,
    backend_pid     integer,
    username        text,
    image_id        text,
    image_method    text
                    CHECK (image_method IN ('register', 'create'))
);

COMMENT ON TABLE @extschema@.ami_snapshot_history IS
    'One row per ami_snapshot() call: what was snapshotted, the backup''s LSNs and label, and how it ended';
COMMENT ON COLUMN @extschema@.ami_snapshot_history.frozen_ms IS
    'How long writes to the database''s filesystems were blocked (frozen to thawed), in milliseconds';
COMMENT ON COLUMN @extschema@.ami_snapshot_history.image_id IS
    'The AMI made (image => register or create), or the one a failed attempt half made';
COMMENT ON COLUMN @extschema@.ami_snapshot_history.image_method IS
    'How the AMI was made: register (CreateSnapshots + RegisterImage) or create (CreateImage); NULL for a snapshot set';

CREATE INDEX ami_snapshot_history_started_at_idx
    ON @extschema@.ami_snapshot_history (started_at);

-- pg_dump keeps the history.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ami_snapshot_history', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ami_snapshot_history_id_seq', '');

REVOKE ALL ON @extschema@.ami_snapshot_history FROM PUBLIC;

CREATE FUNCTION @extschema@.ami_snapshot(
    name            text,
    freeze          boolean DEFAULT true,
    image           text DEFAULT NULL,
    allow_product_code_loss boolean DEFAULT false,
    OUT id          bigint,
    OUT request_id  text,
    OUT snapshot_name text,
    OUT instance_id text,
    OUT volume_ids  text[],
    OUT snapshot_ids text[],
    OUT start_lsn   pg_catalog.pg_lsn,
    OUT stop_lsn    pg_catalog.pg_lsn,
    OUT timeline    integer,
    OUT frozen_ms   double precision,
    OUT status      text,
    OUT image_id    text)
RETURNS record
AS 'MODULE_PATHNAME', 'ami_snapshot'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.ami_snapshot(text, boolean, text, boolean) IS
    'Takes a consistent EBS snapshot set of the volumes holding this database, or an AMI of the instance (image => register or create)';

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot(text, boolean, text, boolean) FROM PUBLIC;
