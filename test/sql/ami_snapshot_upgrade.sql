--
-- The upgrades, step by step.  1.0 to 1.1: the history keeps its rows and
-- gains the image columns, the function gains image and
-- allow_product_code_loss (the update names the roles to grant it to
-- again), and both work before and after (without a helper: the failed
-- attempts are recorded).  1.1 to 1.2: ami_snapshot_verify() and
-- ami_snapshot_verification arrive, nothing of 1.1 changes.  1.2 to 1.3:
-- the lifecycle functions.  1.3 to 1.4: freeze defaults to the setting;
-- the result is the same as a fresh 1.4.
--
DROP EXTENSION ami_snapshot;
CREATE EXTENSION ami_snapshot VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'ami_snapshot';
SELECT pg_get_function_arguments('ami_snapshot'::regproc);
CREATE ROLE amis_upgrade_operator;
GRANT EXECUTE ON FUNCTION ami_snapshot(text, boolean) TO amis_upgrade_operator;

-- 1.0 with this library: the plain call works (fails without a helper, recorded).
SET ami_snapshot.helper_socket = '/nonexistent/ami-snapshot/helper.sock';
SELECT * FROM ami_snapshot('before the upgrade');
SELECT name, status, error_code FROM ami_snapshot_history ORDER BY id;

ALTER EXTENSION ami_snapshot UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'ami_snapshot';
\x on
SELECT pg_get_function_arguments('ami_snapshot'::regproc),
       pg_get_function_result('ami_snapshot'::regproc);
\x off
SELECT has_function_privilege('public', 'ami_snapshot(text, boolean, text, boolean)', 'EXECUTE');
-- As the WARNING says (the update does not grant it itself).
GRANT EXECUTE ON FUNCTION ami_snapshot(text, boolean, text, boolean) TO amis_upgrade_operator;
SELECT has_function_privilege('amis_upgrade_operator',
                              'ami_snapshot(text, boolean, text, boolean)', 'EXECUTE');

-- After: the old row is there, new calls record the image method.
SELECT * FROM ami_snapshot('after the upgrade');
SELECT * FROM ami_snapshot('an image after the upgrade', image => 'create');
SET ROLE amis_upgrade_operator;
SELECT * FROM ami_snapshot('the operator after the upgrade', freeze => false);
RESET ROLE;
SELECT name, status, error_code, image_method, image_id FROM ami_snapshot_history ORDER BY id;

-- The same table as a fresh 1.1 (columns, in order).
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute WHERE attrelid = 'ami_snapshot_history'::regclass AND attnum > 0
  ORDER BY attnum;

-- 1.1 to 1.2: the grants of 1.1's functions stay.
ALTER EXTENSION ami_snapshot UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'ami_snapshot';
SELECT has_function_privilege('amis_upgrade_operator',
                              'ami_snapshot(text, boolean, text, boolean)', 'EXECUTE');
SELECT count(*) AS history_rows FROM ami_snapshot_history;
\x on
SELECT pg_get_function_arguments('ami_snapshot_verify'::regproc),
       pg_get_function_result('ami_snapshot_verify'::regproc);
\x off
SELECT has_function_privilege('public',
    'ami_snapshot_verify(bigint, text, text, text, text, interval, interval, boolean, text[], boolean, boolean, integer, boolean)',
    'EXECUTE');
SELECT has_table_privilege('public', 'ami_snapshot_verification', 'SELECT');
-- Works after the update (no helper: the attempt is recorded).
SELECT * FROM ami_snapshot_verify(name => 'no such backup');
SELECT id AS after_id FROM ami_snapshot_history WHERE name = 'after the upgrade' \gset
UPDATE ami_snapshot_history SET status = 'succeeded' WHERE id = :after_id;
SELECT * FROM ami_snapshot_verify(:after_id);
SELECT backup_id = :after_id AS the_backup, status, error_code FROM ami_snapshot_verification;

-- 1.2 to 1.3: the lifecycle functions, ami_snapshot_jobs, the views and
-- the history's completion columns, ami_snapshot_check() and
-- ami_snapshot_status(); the history keeps its rows, 1.2's
-- functions their grants; nothing new is granted to PUBLIC.
ALTER EXTENSION ami_snapshot UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'ami_snapshot';
SELECT has_function_privilege('amis_upgrade_operator',
                              'ami_snapshot(text, boolean, text, boolean)', 'EXECUTE');
SELECT count(*) AS history_rows, count(completion_state) AS completions FROM ami_snapshot_history;
SELECT has_function_privilege('public', 'ami_snapshot_prune(text, boolean, text, boolean)', 'EXECUTE') AS prune,
       has_function_privilege('public', 'ami_snapshot_wait(text, interval, interval, text, boolean)', 'EXECUTE') AS wait,
       has_function_privilege('public', 'ami_snapshot_job_run(text, text[], text)', 'EXECUTE') AS job_run,
       has_table_privilege('public', 'ami_snapshot_jobs', 'SELECT') AS jobs,
       has_table_privilege('public', 'ami_snapshot_backups', 'SELECT') AS backups,
       has_table_privilege('public', 'ami_snapshot_prune_log', 'SELECT') AS prune_log;
-- Works after the update (no helper: the attempt is recorded).
\set SHOW_CONTEXT never
SELECT * FROM ami_snapshot_prune();
\set SHOW_CONTEXT errors
SELECT kind, status, error_code, args FROM ami_snapshot_jobs ORDER BY id;
SELECT has_function_privilege('public', 'ami_snapshot_check(text)', 'EXECUTE');
SELECT name, ok FROM ami_snapshot_check() WHERE name IN ('extension', 'helper reachable');

-- 1.3 to 1.4: ami_snapshot()'s freeze defaults to NULL (the setting
-- ami_snapshot.default_freeze); its grants stay, nothing else changes.
ALTER EXTENSION ami_snapshot UPDATE TO '1.4';
SELECT extversion FROM pg_extension WHERE extname = 'ami_snapshot';
SELECT pg_get_function_arguments('ami_snapshot'::regproc);
SELECT has_function_privilege('amis_upgrade_operator',
                              'ami_snapshot(text, boolean, text, boolean)', 'EXECUTE') AS operator,
       has_function_privilege('public', 'ami_snapshot(text, boolean, text, boolean)', 'EXECUTE') AS public;
SET ami_snapshot.default_freeze = off;
SELECT * FROM ami_snapshot('after the update to 1.4');
RESET ami_snapshot.default_freeze;
SELECT name, with_freeze FROM ami_snapshot_history WHERE name = 'after the update to 1.4';

-- The updated extension is the same as a fresh 1.4: its objects, the
-- new tables' columns, and ami_snapshot()'s arguments.
CREATE TEMP TABLE updated AS
  SELECT pg_describe_object(classid, objid, objsubid) AS object
    FROM pg_depend
   WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
     AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ami_snapshot');
CREATE TEMP TABLE updated_columns AS
  SELECT attrelid::regclass::text AS rel, attname, format_type(atttypid, atttypmod) AS type
    FROM pg_attribute
   WHERE attrelid IN ('ami_snapshot_history'::regclass, 'ami_snapshot_verification'::regclass,
                      'ami_snapshot_jobs'::regclass)
     AND attnum > 0 AND NOT attisdropped;
CREATE TEMP TABLE updated_arguments AS
  SELECT pg_get_function_arguments('ami_snapshot'::regproc) AS args;
REVOKE ALL ON FUNCTION ami_snapshot(text, boolean, text, boolean) FROM amis_upgrade_operator;
DROP EXTENSION ami_snapshot;
CREATE EXTENSION ami_snapshot;
SELECT extversion FROM pg_extension WHERE extname = 'ami_snapshot';
-- (Both ways; how many objects there are differs between majors.)
CREATE TEMP TABLE fresh AS
  SELECT pg_describe_object(classid, objid, objsubid) AS object
    FROM pg_depend
   WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
     AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ami_snapshot');
(SELECT object FROM updated EXCEPT SELECT object FROM fresh)
UNION ALL
(SELECT object FROM fresh EXCEPT SELECT object FROM updated);
SELECT count(*) AS new_objects FROM fresh
 WHERE object IN ('table ami_snapshot_verification',
                  'function ami_snapshot_verify(bigint,text,text,text,text,interval,interval,boolean,text[],boolean,boolean,integer,boolean)',
                  'table ami_snapshot_jobs', 'view ami_snapshot_backups',
                  'view ami_snapshot_prune_log',
                  'function ami_snapshot_wait(text,interval,interval,text,boolean)',
                  'function ami_snapshot_prune(text,boolean,text,boolean)',
                  'function ami_snapshot_list(text,text)',
                  'function ami_snapshot_copy(text,text,text,text[],text)',
                  'function ami_snapshot_lock(text,text,integer,timestamp with time zone,integer,text)',
                  'function ami_snapshot_unlock(text,text)');
(SELECT * FROM updated_columns
 EXCEPT
 SELECT attrelid::regclass::text, attname, format_type(atttypid, atttypmod)
   FROM pg_attribute
  WHERE attrelid IN ('ami_snapshot_history'::regclass, 'ami_snapshot_verification'::regclass,
                     'ami_snapshot_jobs'::regclass)
    AND attnum > 0 AND NOT attisdropped)
UNION ALL
(SELECT attrelid::regclass::text, attname, format_type(atttypid, atttypmod)
   FROM pg_attribute
  WHERE attrelid IN ('ami_snapshot_history'::regclass, 'ami_snapshot_verification'::regclass,
                     'ami_snapshot_jobs'::regclass)
    AND attnum > 0 AND NOT attisdropped
 EXCEPT
 SELECT * FROM updated_columns);
SELECT args = pg_get_function_arguments('ami_snapshot'::regproc) AS same_arguments
  FROM updated_arguments;
DROP ROLE amis_upgrade_operator;
