/* sql/ami_snapshot--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ami_snapshot UPDATE TO '1.3'" to load this file. \quit

-- 1.3: a backup's life from SQL (doc/sql.md, doc/lifecycle.md).
-- ami_snapshot_wait(), ami_snapshot_prune(), ami_snapshot_copy(),
-- ami_snapshot_lock(), ami_snapshot_unlock() and the view
-- ami_snapshot_backups are SQL functions over one C function that asks the
-- helper for a lifecycle job (its own `ami-snapshot KIND --json`, always
-- with this cluster's system identifier).  Every job that changes
-- something leaves a row in ami_snapshot_jobs; a wait that saw its backup
-- end writes that into the backup's ami_snapshot_history row.  Nothing of
-- 1.2 changes.

-- The backup's completion, as ami_snapshot_wait() saw it.
ALTER TABLE @extschema@.ami_snapshot_history
    ADD COLUMN completion_state text
        CHECK (completion_state IN ('completed', 'failed')),
    ADD COLUMN completed_at timestamptz,
    ADD COLUMN completion_reason text;

COMMENT ON COLUMN @extschema@.ami_snapshot_history.completion_state IS
    'completed or failed, as ami_snapshot_wait() last saw the backup''s snapshots and image in EC2 (NULL: never waited for)';
COMMENT ON COLUMN @extschema@.ami_snapshot_history.completed_at IS
    'When ami_snapshot_wait() saw the backup complete or fail';
COMMENT ON COLUMN @extschema@.ami_snapshot_history.completion_reason IS
    'EC2''s reason when the backup failed (a snapshot''s statusMessage, the image''s stateReason)';

-- One row per lifecycle job asked from SQL that changes something (wait,
-- prune, copy, lock, unlock), written by a background worker in its own
-- transaction like the history, so that a job whose function raised an
-- error keeps its row and its whole document.
CREATE TABLE @extschema@.ami_snapshot_jobs (
    id              bigserial PRIMARY KEY,
    request_id      text NOT NULL UNIQUE,
    kind            text NOT NULL,
    backup          text,
    args            text[],
    status          text NOT NULL
                    CHECK (status IN ('running', 'done', 'error', 'usage', 'not_found',
                                      'not_this_cluster', 'failed', 'timed_out', 'partial',
                                      'killed', 'interrupted')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    duration_ms     double precision,
    exit_code       integer,
    detail          jsonb,
    error_code      text,
    error_message   text,
    backend_pid     integer,
    username        text
);

COMMENT ON TABLE @extschema@.ami_snapshot_jobs IS
    'One row per lifecycle job from SQL (ami_snapshot_wait, _prune, _copy, _lock, _unlock): its arguments, outcome and the command''s whole JSON document';
COMMENT ON COLUMN @extschema@.ami_snapshot_jobs.status IS
    'running, then the outcome of the command''s exit status (doc/lifecycle.md "Exit codes"): done, error, usage, not_found, not_this_cluster, failed, timed_out, partial; killed; interrupted (cancelled, or the backend exited)';
COMMENT ON COLUMN @extschema@.ami_snapshot_jobs.detail IS
    'The document of ami-snapshot KIND --json (doc/lifecycle.md "JSON")';

CREATE INDEX ami_snapshot_jobs_kind_idx ON @extschema@.ami_snapshot_jobs (kind, id);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.ami_snapshot_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ami_snapshot_jobs_id_seq', '');

REVOKE ALL ON @extschema@.ami_snapshot_jobs FROM PUBLIC;

-- Every decision of every ami_snapshot_prune() call, from its job's document.
CREATE VIEW @extschema@.ami_snapshot_prune_log AS
SELECT j.id AS job_id,
       j.request_id AS job_request_id,
       j.started_at,
       j.status AS job_status,
       (j.detail ->> 'dry_run')::boolean AS dry_run,
       d ->> 'request_id' AS request_id,
       d ->> 'name' AS name,
       d ->> 'kind' AS kind,
       d ->> 'region' AS region,
       (d ->> 'created')::timestamptz AS created,
       d ->> 'state' AS state,
       d ->> 'action' AS action,
       d ->> 'reason' AS reason,
       d ->> 'policy' AS policy,
       (d ->> 'done')::boolean AS done,
       ARRAY(SELECT pg_catalog.jsonb_array_elements_text(
                CASE pg_catalog.jsonb_typeof(d -> 'deleted') WHEN 'array' THEN d -> 'deleted'
                     ELSE '[]'::jsonb END)) AS deleted,
       d -> 'error' ->> 'code' AS error_code,
       d -> 'error' ->> 'message' AS error_message,
       j.username
  FROM @extschema@.ami_snapshot_jobs j
 CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(
           CASE pg_catalog.jsonb_typeof(j.detail -> 'decisions') WHEN 'array'
                THEN j.detail -> 'decisions' ELSE '[]'::jsonb END) d
 WHERE j.kind = 'prune';

COMMENT ON VIEW @extschema@.ami_snapshot_prune_log IS
    'Every decision of every ami_snapshot_prune() call (dry runs too): keep, delete or skip, why, and whether it was done';

REVOKE ALL ON @extschema@.ami_snapshot_prune_log FROM PUBLIC;

-- The one C entry: a lifecycle job of the helper.  Only the extension's
-- owner may execute it; the functions below are SECURITY DEFINER over it.
CREATE FUNCTION @extschema@.ami_snapshot_job_run(
    kind            text,
    args            text[],
    backup          text DEFAULT NULL,
    OUT request_id  text,
    OUT outcome     text,
    OUT exit_code   integer,
    OUT report      jsonb,
    OUT message     text,
    OUT duration_ms double precision)
RETURNS record
AS 'MODULE_PATHNAME', 'ami_snapshot_job_run'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_job_run(text, text[], text) FROM PUBLIC;

-- A job that did not end well, as an error: the first error its document
-- names (EC2's UnauthorizedOperation names the IAM action).
CREATE FUNCTION @extschema@.ami_snapshot_job_raise(
    kind text, backup text, job_request_id text, exit_code integer, outcome text,
    report jsonb, message text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    code text;
    msg text;
    state text;
    what text := kind || CASE WHEN backup IS NULL THEN '' ELSE ' of ' || backup END;
BEGIN
    SELECT e.c, e.m INTO code, msg
      FROM (SELECT report -> 'error' ->> 'code' AS c, report -> 'error' ->> 'message' AS m, 0 AS o
             WHERE jsonb_typeof(report -> 'error') = 'object'
            UNION ALL
            SELECT x ->> 'code', coalesce(x ->> 'id' || ': ', '') || (x ->> 'message'), 1
              FROM jsonb_array_elements(CASE jsonb_typeof(report -> 'errors') WHEN 'array'
                                        THEN report -> 'errors' ELSE '[]' END) x
            UNION ALL
            SELECT x ->> 'code', coalesce(x ->> 'id' || ': ', '') || (x ->> 'message'), 2
              FROM jsonb_array_elements(CASE jsonb_typeof(report -> 'region_errors') WHEN 'array'
                                        THEN report -> 'region_errors' ELSE '[]' END) x
            UNION ALL
            SELECT x -> 'error' ->> 'code',
                   (x ->> 'request_id') || ': ' || (x -> 'error' ->> 'message'), 3
              FROM jsonb_array_elements(CASE jsonb_typeof(report -> 'decisions') WHEN 'array'
                                        THEN report -> 'decisions' ELSE '[]' END) x
             WHERE jsonb_typeof(x -> 'error') = 'object') e
     ORDER BY e.o LIMIT 1;
    IF code IS NULL AND kind = 'wait' AND report IS NOT NULL THEN
        code := CASE report ->> 'outcome' WHEN 'timeout' THEN 'WaitTimedOut' ELSE 'BackupFailed' END;
        msg := CASE report ->> 'outcome'
                 WHEN 'timeout' THEN format('not completed after %s s (state %s, %s%%)',
                                            report ->> 'waited_seconds',
                                            report -> 'backup' ->> 'state',
                                            report -> 'backup' ->> 'progress')
                 ELSE 'failed: ' || coalesce(report ->> 'reason', 'no reason given') END;
    END IF;
    code := coalesce(code, outcome);
    msg := coalesce(msg, message, 'the job ended with ' || outcome);
    state := CASE
        WHEN code = 'UnauthorizedOperation' OR exit_code = 4 THEN '42501'
        WHEN exit_code = 2 THEN '22023'
        WHEN exit_code = 3 THEN '42704'
        WHEN exit_code = 6 THEN '57014'
        ELSE '38000' END;
    RAISE EXCEPTION 'ami_snapshot % failed: %: %', what, code, msg
        USING ERRCODE = state,
              DETAIL = format('Job %s ended with %s (exit status %s); ami_snapshot_jobs has its whole document.',
                              job_request_id, outcome, coalesce(exit_code::text, 'none'));
END
$$;

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_job_raise(text, text, text, integer, text, jsonb, text) FROM PUBLIC;

-- A job that must end well: its result, or its error.
CREATE FUNCTION @extschema@.ami_snapshot_job_checked(
    kind            text,
    args            text[],
    backup          text DEFAULT NULL,
    OUT request_id  text,
    OUT outcome     text,
    OUT exit_code   integer,
    OUT report      jsonb,
    OUT message     text,
    OUT duration_ms double precision)
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j record;
BEGIN
    j := @extschema@.ami_snapshot_job_run(kind, args, backup);
    IF j.exit_code IS DISTINCT FROM 0 OR j.report IS NULL THEN
        PERFORM @extschema@.ami_snapshot_job_raise(kind, backup, j.request_id, j.exit_code,
                                                   j.outcome, j.report, j.message);
    END IF;
    request_id := j.request_id;
    outcome := j.outcome;
    exit_code := j.exit_code;
    report := j.report;
    message := j.message;
    duration_ms := j.duration_ms;
END
$$;

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_job_checked(text, text[], text) FROM PUBLIC;

-- A job's arguments: name, value, name, value...; a NULL value leaves its pair out.
CREATE FUNCTION @extschema@.ami_snapshot_args(VARIADIC kv text[])
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r text[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(cardinality(kv), 0) BY 2 LOOP
        IF kv[i + 1] IS NOT NULL THEN
            r := r || ARRAY[kv[i], kv[i + 1]];
        END IF;
    END LOOP;
    RETURN r;
END
$$;

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_args(text[]) FROM PUBLIC;

-- Whole seconds from an interval, for the helper (a fraction rounds up).
CREATE FUNCTION @extschema@.ami_snapshot_seconds(what text, iv interval, min_s integer, max_s integer)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s numeric;
BEGIN
    IF iv IS NULL THEN
        RAISE EXCEPTION '% must not be null', what USING ERRCODE = '22004';
    END IF;
    IF extract(month FROM iv) <> 0 OR extract(year FROM iv) <> 0 THEN
        RAISE EXCEPTION '% must not be given in months or years', what USING ERRCODE = '22023';
    END IF;
    s := ceil(extract(epoch FROM iv));
    IF s < min_s OR s > max_s THEN
        RAISE EXCEPTION '% must be between % and % seconds', what, min_s, max_s
            USING ERRCODE = '22023';
    END IF;
    RETURN s::integer;
END
$$;

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_seconds(text, interval, integer, integer) FROM PUBLIC;

-- ami_snapshot_wait(): follows a backup (request id, ami- or snap- id) to
-- completed or failed; one row per snapshot.
CREATE FUNCTION @extschema@.ami_snapshot_wait(
    id              text,
    timeout         interval DEFAULT '1 hour',
    poll            interval DEFAULT '15 seconds',
    region          text DEFAULT NULL,
    error_on_failure boolean DEFAULT true)
RETURNS TABLE (
    request_id      text,
    backup_region   text,
    outcome         text,
    state           text,
    progress        integer,
    reason          text,
    waited_seconds  double precision,
    image_id        text,
    image_state     text,
    snapshot_id     text,
    snapshot_state  text,
    snapshot_progress integer,
    state_message   text,
    job_request_id  text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j record;
    args text[];
BEGIN
    IF id IS NULL OR error_on_failure IS NULL THEN
        RAISE EXCEPTION 'id and error_on_failure must not be null' USING ERRCODE = '22004';
    END IF;
    args := @extschema@.ami_snapshot_args(
        'timeout', @extschema@.ami_snapshot_seconds('timeout', timeout, 0, 86400)::text,
        'interval', @extschema@.ami_snapshot_seconds('poll', poll, 1, 3600)::text,
        'region', region);
    j := @extschema@.ami_snapshot_job_run('wait', args, id);
    IF j.exit_code IS DISTINCT FROM 0 AND
       (error_on_failure OR j.report IS NULL OR j.report -> 'backup' IS NULL
        OR jsonb_typeof(j.report -> 'backup') <> 'object') THEN
        PERFORM @extschema@.ami_snapshot_job_raise('wait', id, j.request_id, j.exit_code,
                                                   j.outcome, j.report, j.message);
    END IF;
    RETURN QUERY
    SELECT j.report ->> 'request_id', j.report ->> 'region', j.report ->> 'outcome',
           b ->> 'state', (b ->> 'progress')::integer,
           coalesce(j.report ->> 'reason', b ->> 'reason'),
           (j.report ->> 'waited_seconds')::double precision,
           b -> 'image' ->> 'image_id', b -> 'image' ->> 'state',
           s ->> 'snapshot_id', s ->> 'state',
           nullif(rtrim(s ->> 'progress', '%'), '')::integer,
           s ->> 'state_message', j.request_id
      FROM (SELECT j.report -> 'backup' AS b) x
      LEFT JOIN LATERAL jsonb_array_elements(
                CASE jsonb_typeof(x.b -> 'snapshots') WHEN 'array' THEN x.b -> 'snapshots'
                     ELSE '[]' END) s ON true;
END
$$;

COMMENT ON FUNCTION @extschema@.ami_snapshot_wait(text, interval, interval, text, boolean) IS
    'Follows a backup''s snapshots and AMI to completed (or failed, with EC2''s reason) through a job of the helper; one row per snapshot; records the completion in ami_snapshot_history';

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_wait(text, interval, interval, text, boolean) FROM PUBLIC;

-- ami_snapshot_prune(): the retention policy, a dry run unless told.
CREATE FUNCTION @extschema@.ami_snapshot_prune(
    policy          text DEFAULT NULL,
    dry_run         boolean DEFAULT true,
    region          text DEFAULT NULL,
    error_on_failure boolean DEFAULT true)
RETURNS TABLE (
    request_id      text,
    name            text,
    kind            text,
    backup_region   text,
    created         timestamptz,
    state           text,
    action          text,
    reason          text,
    policy_pattern  text,
    done            boolean,
    deleted         text[],
    error_code      text,
    error_message   text,
    job_request_id  text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j record;
    args text[] := '{}';
    p text;
BEGIN
    IF dry_run IS NULL OR error_on_failure IS NULL THEN
        RAISE EXCEPTION 'dry_run and error_on_failure must not be null' USING ERRCODE = '22004';
    END IF;
    IF policy IS NOT NULL THEN
        FOREACH p IN ARRAY regexp_split_to_array(policy, '\s*;\s*') LOOP
            CONTINUE WHEN p = '';
            args := args || ARRAY['policy', p];
        END LOOP;
        IF cardinality(args) = 0 THEN
            RAISE EXCEPTION 'policy names no policy'
                USING ERRCODE = '22023',
                      HINT = 'PATTERN:RULE[,RULE...], several separated by ";" (doc/lifecycle.md); NULL takes the helper''s [retention] policy lines.';
        END IF;
    END IF;
    args := args || @extschema@.ami_snapshot_args('dry_run', CASE WHEN dry_run THEN 'true' END,
                                                  'region', region);
    j := @extschema@.ami_snapshot_job_run('prune', args);
    IF j.exit_code IS DISTINCT FROM 0 AND
       (error_on_failure OR j.report IS NULL OR jsonb_typeof(j.report -> 'decisions') IS DISTINCT FROM 'array') THEN
        PERFORM @extschema@.ami_snapshot_job_raise('prune', NULL, j.request_id, j.exit_code,
                                                   j.outcome, j.report, j.message);
    END IF;
    RETURN QUERY
    SELECT d ->> 'request_id', d ->> 'name', d ->> 'kind', d ->> 'region',
           (d ->> 'created')::timestamptz, d ->> 'state', d ->> 'action', d ->> 'reason',
           d ->> 'policy', (d ->> 'done')::boolean,
           ARRAY(SELECT jsonb_array_elements_text(
                    CASE jsonb_typeof(d -> 'deleted') WHEN 'array' THEN d -> 'deleted'
                         ELSE '[]' END)),
           d -> 'error' ->> 'code', d -> 'error' ->> 'message', j.request_id
      FROM jsonb_array_elements(j.report -> 'decisions') d;
END
$$;

COMMENT ON FUNCTION @extschema@.ami_snapshot_prune(text, boolean, text, boolean) IS
    'Applies the retention policy (or the helper''s [retention] policy) to this cluster''s backups; a dry run unless dry_run => false; one row per backup considered; ami_snapshot_prune_log keeps every decision';

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_prune(text, boolean, text, boolean) FROM PUBLIC;

-- ami_snapshot_list(): what there is, in EC2 (home region, [copy] regions,
-- also_region), joined with what this database knows; the view
-- ami_snapshot_backups is this function without arguments.
CREATE FUNCTION @extschema@.ami_snapshot_list(
    only_name       text DEFAULT NULL,
    also_region     text DEFAULT NULL)
RETURNS TABLE (
    request_id      text,
    name            text,
    kind            text,
    region          text,
    state           text,
    restorable      boolean,
    progress        integer,
    created         timestamptz,
    age             interval,
    size_gib        bigint,
    image_id        text,
    snapshot_ids    text[],
    copy_of         text,
    copies          text[],
    lock_state      text,
    lock_expires_on timestamptz,
    verified_tag    text,
    history_id      bigint,
    history_status  text,
    completion_state text,
    last_verification text,
    last_verified_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j record;
BEGIN
    j := @extschema@.ami_snapshot_job_checked(
        'list', @extschema@.ami_snapshot_args('name', only_name, 'region', also_region));
    RETURN QUERY
    SELECT b ->> 'request_id', b ->> 'name', b ->> 'kind', b ->> 'region', b ->> 'state',
           b ->> 'state' = 'completed', (b ->> 'progress')::integer,
           (b ->> 'created')::timestamptz,
           date_trunc('second', now() - (b ->> 'created')::timestamptz),
           (b ->> 'size_gib')::bigint,
           b -> 'image' ->> 'image_id',
           ARRAY(SELECT s ->> 'snapshot_id'
                   FROM jsonb_array_elements(CASE jsonb_typeof(b -> 'snapshots') WHEN 'array'
                                             THEN b -> 'snapshots' ELSE '[]' END) s),
           CASE WHEN jsonb_typeof(b -> 'copy_of') = 'object'
                THEN (b -> 'copy_of' ->> 'region') || ' ' || (b -> 'copy_of' ->> 'id') END,
           ARRAY(SELECT (c ->> 'region') || ' ' || coalesce(c ->> 'state', '')
                   FROM jsonb_array_elements(CASE jsonb_typeof(b -> 'copies') WHEN 'array'
                                             THEN b -> 'copies' ELSE '[]' END) c),
           b -> 'lock' ->> 'state', (b -> 'lock' ->> 'expires_on')::timestamptz,
           b ->> 'verified',
           h.id, h.status, h.completion_state, v.status, v.finished_at
      FROM jsonb_array_elements(j.report -> 'backups') b
      LEFT JOIN @extschema@.ami_snapshot_history h ON h.request_id = b ->> 'request_id'
      LEFT JOIN LATERAL (SELECT vv.status, vv.finished_at
                           FROM @extschema@.ami_snapshot_verification vv
                          WHERE vv.backup_request_id = b ->> 'request_id'
                          ORDER BY vv.id DESC LIMIT 1) v ON true;
END
$$;

COMMENT ON FUNCTION @extschema@.ami_snapshot_list(text, text) IS
    'This cluster''s backups as EC2 has them (every region the helper looks in), with what ami_snapshot_history and ami_snapshot_verification know of them';

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_list(text, text) FROM PUBLIC;

CREATE VIEW @extschema@.ami_snapshot_backups AS
    SELECT * FROM @extschema@.ami_snapshot_list();

COMMENT ON VIEW @extschema@.ami_snapshot_backups IS
    'What do I have, and can I restore from it: this cluster''s backups in EC2 (each SELECT asks EC2 through the helper), with the local history and last verification';

REVOKE ALL ON @extschema@.ami_snapshot_backups FROM PUBLIC;

-- ami_snapshot_copy(): a completed backup into another region.
CREATE FUNCTION @extschema@.ami_snapshot_copy(
    id              text,
    region          text,
    kms_key_id      text DEFAULT NULL,
    share           text[] DEFAULT NULL,
    source_region   text DEFAULT NULL)
RETURNS TABLE (
    source_id       text,
    copy_id         text,
    copy_region     text,
    job_request_id  text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j record;
    args text[];
    a text;
BEGIN
    IF id IS NULL OR region IS NULL THEN
        RAISE EXCEPTION 'id and region must not be null' USING ERRCODE = '22004';
    END IF;
    args := @extschema@.ami_snapshot_args('to_region', region, 'kms_key_id', kms_key_id,
                                          'region', source_region);
    FOREACH a IN ARRAY coalesce(share, '{}') LOOP
        args := args || ARRAY['share', a];
    END LOOP;
    j := @extschema@.ami_snapshot_job_checked('copy', args, id);
    RETURN QUERY
    SELECT c ->> 'source_id', c ->> 'copy_id', j.report ->> 'region', j.request_id
      FROM jsonb_array_elements(j.report -> 'copies' ||
                                CASE jsonb_typeof(j.report -> 'snapshot_copies') WHEN 'array'
                                     THEN j.report -> 'snapshot_copies' ELSE '[]' END) c;
END
$$;

COMMENT ON FUNCTION @extschema@.ami_snapshot_copy(text, text, text, text[], text) IS
    'Copies a completed backup (its snapshots, or its AMI) into another region, tagged as the source; optionally encrypted with a KMS key and shared with accounts';

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_copy(text, text, text, text[], text) FROM PUBLIC;

-- ami_snapshot_lock(): a snapshot lock on each of the backup's snapshots.
CREATE FUNCTION @extschema@.ami_snapshot_lock(
    id              text,
    mode            text DEFAULT NULL,
    days            integer DEFAULT NULL,
    until           timestamptz DEFAULT NULL,
    cool_off_hours  integer DEFAULT NULL,
    region          text DEFAULT NULL)
RETURNS TABLE (
    snapshot_id     text,
    lock_state      text,
    expires_on      timestamptz,
    cool_off_expires_on timestamptz,
    job_request_id  text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j record;
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'id must not be null' USING ERRCODE = '22004';
    END IF;
    j := @extschema@.ami_snapshot_job_checked('lock', @extschema@.ami_snapshot_args(
        'mode', mode, 'days', days::text,
        'until', to_char(until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'cool_off_hours', cool_off_hours::text, 'region', region), id);
    RETURN QUERY
    SELECT l ->> 'snapshot_id', l ->> 'state', (l ->> 'expires_on')::timestamptz,
           (l ->> 'cool_off_expires_on')::timestamptz, j.request_id
      FROM jsonb_array_elements(j.report -> 'locks') l;
END
$$;

COMMENT ON FUNCTION @extschema@.ami_snapshot_lock(text, text, integer, timestamptz, integer, text) IS
    'Locks each snapshot of a backup (LockSnapshot): governance or compliance, for days or until a date; without options, the helper''s [lock] section';

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_lock(text, text, integer, timestamptz, integer, text) FROM PUBLIC;

-- ami_snapshot_unlock(): removes what locks EC2 lets go.
CREATE FUNCTION @extschema@.ami_snapshot_unlock(
    id              text,
    region          text DEFAULT NULL)
RETURNS TABLE (
    snapshot_id     text,
    job_request_id  text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j record;
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'id must not be null' USING ERRCODE = '22004';
    END IF;
    j := @extschema@.ami_snapshot_job_checked('unlock', @extschema@.ami_snapshot_args('region', region), id);
    RETURN QUERY
    SELECT u, j.request_id
      FROM jsonb_array_elements_text(j.report -> 'unlocked') u;
END
$$;

COMMENT ON FUNCTION @extschema@.ami_snapshot_unlock(text, text) IS
    'Removes the governance locks (and compliance locks in their cool-off) of a backup''s snapshots';

REVOKE ALL ON FUNCTION @extschema@.ami_snapshot_unlock(text, text) FROM PUBLIC;

-- 1.3: the preflight check.  ami_snapshot_check() asks the helper whether
-- a snapshot would work, one row per check; nothing is frozen and no
-- backup is started (doc/operations.md, "Preflight check").
-- ami_snapshot_status() shows what the helper is doing now, to another
-- session (doc/operations.md, "Progress").

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
