/* sql/ami_snapshot--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ami_snapshot UPDATE TO '1.3'" to load this file. \quit

-- 1.3: the preflight check.  ami_snapshot_check() asks the helper whether
-- a snapshot would work, one row per check; nothing is frozen and no
-- backup is started (doc/operations.md, "Preflight check").
-- ami_snapshot_status() shows what the helper is doing now, to another
-- session (doc/operations.md, "Progress").  Nothing of 1.2 changes.

CREATE FUNCTION @extschema@.ami_snapshot_check(
    image      text DEFAULT NULL,
    OUT name   text,
    OUT ok     boolean,
    OUT detail text,
    OUT hint   text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'ami_snapshot_check'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.ami_snapshot_check(text) IS
    'Preflight check: whether ami_snapshot() would work (helper, allowed caller, configuration, paths to EBS volumes, allow-list, state_dir, IMDS, credentials, region, EC2 permissions by DryRun, with image => register or create an AMI method''s too); one row per check, ok NULL when skipped; nothing is frozen';

-- Who may snapshot may check; it tells the configuration's weak points.
REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_check(text) FROM PUBLIC;

CREATE FUNCTION @extschema@.ami_snapshot_status(
    OUT state         text,
    OUT request_id    text,
    OUT name          text,
    OUT step          text,
    OUT frozen_ms     double precision,
    OUT frozen_mounts text[])
RETURNS record
AS 'MODULE_PATHNAME', 'ami_snapshot_status'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.ami_snapshot_status() IS
    'What the helper is doing now, as ami-snapshot-helper --status shows it: idle, busy, frozen or thaw-pending, with the operation''s request id, name and live step, and while frozen for how long and which mount points';

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_status() FROM PUBLIC;
