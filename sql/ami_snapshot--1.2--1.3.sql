/* sql/ami_snapshot--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ami_snapshot UPDATE TO '1.3'" to load this file. \quit

-- 1.3: the preflight check.  ami_snapshot_check() asks the helper whether
-- a snapshot would work, one row per check; nothing is frozen and no
-- backup is started (doc/operations.md, "Preflight check").  Nothing of
-- 1.2 changes.

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
