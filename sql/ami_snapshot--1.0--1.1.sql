/* sql/ami_snapshot--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ami_snapshot UPDATE TO '1.1'" to load this file. \quit

-- 1.1: AMIs.  ami_snapshot() gains image and allow_product_code_loss and
-- returns image_id; the history gains image_id and image_method.

ALTER TABLE @extschema@.ami_snapshot_history
    ADD COLUMN image_id text,
    ADD COLUMN image_method text CHECK (image_method IN ('register', 'create'));
COMMENT ON COLUMN @extschema@.ami_snapshot_history.image_id IS
    'The AMI made (image => register or create), or the one a failed attempt half made';
COMMENT ON COLUMN @extschema@.ami_snapshot_history.image_method IS
    'How the AMI was made: register (CreateSnapshots + RegisterImage) or create (CreateImage); NULL for a snapshot set';

-- The function's signature changes, so it is dropped and created again.
-- Its grants are not carried over here: a GRANT made by an extension script
-- becomes one of the extension's initial privileges, which pg_dump leaves
-- out and which (PostgreSQL 17 on) keeps the role from being dropped.  The
-- roles to grant EXECUTE to again are named in a WARNING (extension
-- scripts run with client_min_messages at warning at least).
DO $$
DECLARE
    roles text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT pg_catalog.quote_ident(r.rolname), ', ')
      INTO roles
      FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a, pg_catalog.pg_roles r
     WHERE p.oid = '@extschema@.ami_snapshot(text, boolean)'::pg_catalog.regprocedure
       AND a.privilege_type = 'EXECUTE' AND a.grantee = r.oid AND a.grantee <> p.proowner;
    IF roles IS NOT NULL THEN
        RAISE WARNING 'ami_snapshot(text, boolean) is replaced by ami_snapshot(text, boolean, text, boolean): grant EXECUTE on it again to %', roles
            USING HINT = 'GRANT EXECUTE ON FUNCTION ami_snapshot(text, boolean, text, boolean) TO ' || roles || ';';
    END IF;
END $$;

DROP FUNCTION @extschema@.ami_snapshot(text, boolean);

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
