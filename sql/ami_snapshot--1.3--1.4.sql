/* sql/ami_snapshot--1.3--1.4.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ami_snapshot UPDATE TO '1.4'" to load this file. \quit

-- 1.4: ami_snapshot()'s freeze defaults to NULL, which means the setting
-- ami_snapshot.default_freeze (on unless an administrator turns it off):
-- a site may choose zero-stall backups (freeze => false, crash-consistent
-- sets) without changing its callers (doc/sql.md, "Choosing the freeze").
-- Only the default changes: the signature, grants and comment stay.
CREATE OR REPLACE FUNCTION @extschema@.ami_snapshot(
    name            text,
    freeze          boolean DEFAULT NULL,
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
