--
-- The SQL surface of ami_snapshot, without a helper: argument validation,
-- privileges, GUCs, the history table, and a clear error (and a history
-- row) when the helper cannot be reached.
--
SELECT extversion FROM pg_extension WHERE extname = 'ami_snapshot';

-- The function's signature.
\x on
SELECT pg_get_function_arguments('ami_snapshot'::regproc),
       pg_get_function_result('ami_snapshot'::regproc);
\x off

-- Not executable by PUBLIC; the history is not readable by PUBLIC.
SELECT has_function_privilege('public', 'ami_snapshot(text, boolean, text, boolean)', 'EXECUTE');
SELECT has_table_privilege('public', 'ami_snapshot_history', 'SELECT');
CREATE ROLE amis_nobody;
SET ROLE amis_nobody;
SELECT * FROM ami_snapshot('nightly');
SELECT count(*) FROM ami_snapshot_history;
RESET ROLE;

-- An operator role, as doc/sql.md shows.
CREATE ROLE amis_operator;
GRANT EXECUTE ON FUNCTION ami_snapshot(text, boolean, text, boolean) TO amis_operator;
GRANT SELECT ON ami_snapshot_history TO amis_operator;
SELECT has_function_privilege('amis_operator', 'ami_snapshot(text, boolean, text, boolean)', 'EXECUTE');

-- Names follow EC2's AMI name rules.
SELECT * FROM ami_snapshot(NULL);
SELECT * FROM ami_snapshot('ab');
SELECT * FROM ami_snapshot(repeat('x', 129));
SELECT * FROM ami_snapshot('nightly;drop');
SELECT * FROM ami_snapshot(E'new\nline');
SELECT * FROM ami_snapshot('ünïcode');

-- image: NULL (a snapshot set), 'register' or 'create'.
SELECT * FROM ami_snapshot('nightly', image => 'ami');
SELECT * FROM ami_snapshot('nightly', image => 'Register');
SELECT * FROM ami_snapshot('nightly', image => 'register', allow_product_code_loss => NULL);
SELECT * FROM ami_snapshot('nightly', image => 'create', allow_product_code_loss => true);
SELECT * FROM ami_snapshot('nightly', allow_product_code_loss => true);

-- GUCs.
SHOW ami_snapshot.helper_socket;
SHOW ami_snapshot.request_timeout;
SHOW ami_snapshot.wait_for_archive;
-- Below the minimum is refused (the message's wording differs between
-- PostgreSQL majors: the bounds come from pg_settings).
DO $$
BEGIN
	SET ami_snapshot.request_timeout = 10;
	RAISE EXCEPTION 'a 10 ms request timeout was accepted';
EXCEPTION WHEN invalid_parameter_value THEN
	RAISE NOTICE 'refused: %', sqlstate;
END $$;
SELECT min_val, max_val, unit FROM pg_settings WHERE name = 'ami_snapshot.request_timeout';
SET ami_snapshot.request_timeout = '5s';
SHOW ami_snapshot.request_timeout;
SET ami_snapshot.no_such_setting = 1;
SET ROLE amis_operator;
SET ami_snapshot.helper_socket = '/tmp/evil.sock';
SET ami_snapshot.default_freeze = off;
RESET ROLE;

-- No helper: a clear error, and the attempt is in the history.
SET ami_snapshot.helper_socket = '/nonexistent/ami-snapshot/helper.sock';
SELECT * FROM ami_snapshot('no helper here');
SELECT name, status, with_freeze, error_code, error_message, snapshot_ids, finished_at IS NOT NULL AS finished, started_at <= finished_at AS ordered
  FROM ami_snapshot_history ORDER BY id;

-- An AMI asked for: the method is in the history.
SELECT * FROM ami_snapshot('no helper image', image => 'register');
SELECT name, status, image_method, image_id, error_code FROM ami_snapshot_history
  WHERE name = 'no helper image';

-- freeze not given, or NULL: the setting ami_snapshot.default_freeze (on),
-- which only a superuser changes.
SHOW ami_snapshot.default_freeze;
SET ami_snapshot.default_freeze = off;
SELECT * FROM ami_snapshot('default freeze off');
SELECT * FROM ami_snapshot('freeze null', NULL);
RESET ami_snapshot.default_freeze;
SELECT * FROM ami_snapshot('default freeze on', freeze => NULL);
SELECT name, with_freeze FROM ami_snapshot_history
  WHERE name IN ('default freeze off', 'freeze null', 'default freeze on') ORDER BY id;
SELECT context FROM pg_settings WHERE name = 'ami_snapshot.default_freeze';

-- As the operator too (the history is written by a worker, not the caller).
SET ROLE amis_operator;
SELECT * FROM ami_snapshot('operator run', freeze => false);
SELECT name, status, with_freeze, username FROM ami_snapshot_history ORDER BY id;
RESET ROLE;

-- The failed calls left no backup running in this session.
SELECT pg_backup_start('check', true) IS NOT NULL AS started;
SELECT lsn IS NOT NULL AS stopped FROM pg_backup_stop(false);

-- A backup already running in this session is refused up front.
SELECT pg_backup_start('mine', true) IS NOT NULL AS started;
SELECT * FROM ami_snapshot('while backing up');
SELECT lsn IS NOT NULL AS stopped FROM pg_backup_stop(false);

-- The history table's shape.
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute WHERE attrelid = 'ami_snapshot_history'::regclass AND attnum > 0
  ORDER BY attnum;

REVOKE ALL ON FUNCTION ami_snapshot(text, boolean, text, boolean) FROM amis_operator;
REVOKE ALL ON ami_snapshot_history FROM amis_operator;
DROP ROLE amis_operator;
DROP ROLE amis_nobody;
