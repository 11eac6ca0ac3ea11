/* sql/ami_snapshot--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ami_snapshot UPDATE TO '1.2'" to load this file. \quit

-- 1.2: verification.  ami_snapshot_verify() asks the helper for a restore
-- drill of a backup; every call leaves a row in ami_snapshot_verification.
-- Nothing of 1.1 changes.

-- One row per ami_snapshot_verify() call (1.2 on): a restore drill of a
-- backup of ami_snapshot_history, run by the helper.  Written like the
-- history, by a background worker in its own transaction, so a failed or
-- interrupted verification keeps its row.  backup_id is the history row's
-- id; no foreign key, so that history may be pruned while its
-- verifications are kept (backup_request_id still names the backup).
CREATE TABLE @extschema@.ami_snapshot_verification (
    id              bigserial PRIMARY KEY,
    request_id      text NOT NULL UNIQUE,
    backup_id       bigint,
    backup_request_id text,
    image_id        text,
    launch          boolean NOT NULL DEFAULT false,
    status          text NOT NULL
                    CHECK (status IN ('running', 'passed', 'failed', 'timed_out',
                                      'interrupted', 'refused', 'error')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    duration_ms     double precision,
    drill_id        text,
    recovered_lsn   pg_catalog.pg_lsn,
    checks_failed   integer,
    detail          jsonb,
    error_code      text,
    error_message   text,
    backend_pid     integer,
    username        text
);

COMMENT ON TABLE @extschema@.ami_snapshot_verification IS
    'One row per ami_snapshot_verify() call: the restore drill of a backup, its outcome, checks and durations';
COMMENT ON COLUMN @extschema@.ami_snapshot_verification.backup_id IS
    'ami_snapshot_history.id of the backup drilled (NULL: a request id not in this history)';
COMMENT ON COLUMN @extschema@.ami_snapshot_verification.status IS
    'running, then passed, failed (a check failed or recovery did not finish), timed_out, interrupted (cancelled, or the backend exited), refused or error';
COMMENT ON COLUMN @extschema@.ami_snapshot_verification.detail IS
    'The drill''s report (ami-snapshot verify --json): checks with their detail and milliseconds, phases_ms, amcheck_not_reached, dumps, tagged';
COMMENT ON COLUMN @extschema@.ami_snapshot_verification.recovered_lsn IS
    'The LSN the drill''s server recovered to';

CREATE INDEX ami_snapshot_verification_backup_id_idx
    ON @extschema@.ami_snapshot_verification (backup_id);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.ami_snapshot_verification', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ami_snapshot_verification_id_seq', '');

REVOKE ALL ON @extschema@.ami_snapshot_verification FROM PUBLIC;

CREATE FUNCTION @extschema@.ami_snapshot_verify(
    id              bigint DEFAULT NULL,
    request_id      text DEFAULT NULL,
    name            text DEFAULT NULL,
    check_sql       text DEFAULT NULL,
    check_db        text DEFAULT NULL,
    time_budget     interval DEFAULT NULL,
    timeout         interval DEFAULT NULL,
    dump            boolean DEFAULT false,
    dump_db         text[] DEFAULT NULL,
    dump_globals    boolean DEFAULT false,
    launch          boolean DEFAULT false,
    tcp_port        integer DEFAULT NULL,
    error_on_failure boolean DEFAULT true,
    OUT verification_id bigint,
    OUT verification_request_id text,
    OUT backup_id   bigint,
    OUT outcome     text,
    OUT drill_id    text,
    OUT recovered_lsn pg_catalog.pg_lsn,
    OUT duration_ms double precision,
    OUT checks_failed integer,
    OUT checks      jsonb,
    OUT detail      jsonb)
RETURNS record
AS 'MODULE_PATHNAME', 'ami_snapshot_verify'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.ami_snapshot_verify(bigint, text, text, text, text, interval, interval, boolean, text[], boolean, boolean, integer, boolean) IS
    'Restore drill of a backup (by history id, request id, or the latest succeeded of a name), run by the helper: a throw-away PostgreSQL on volumes made from its snapshots, checked with amcheck; or with launch => true, an instance booted from the AMI';

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_verify(bigint, text, text, text, text, interval, interval, boolean, text[], boolean, boolean, integer, boolean) FROM PUBLIC;
