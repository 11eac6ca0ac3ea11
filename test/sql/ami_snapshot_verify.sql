--
-- ami_snapshot_verify() without a helper: its signature, privileges, the
-- validation of every option before anything runs, how the backup is
-- chosen, and a clear error (and a verification row) when the helper
-- cannot be reached.
--
\x on
SELECT pg_get_function_arguments('ami_snapshot_verify'::regproc),
       pg_get_function_result('ami_snapshot_verify'::regproc);
\x off

-- Nothing for PUBLIC.
SELECT has_function_privilege('public',
    'ami_snapshot_verify(bigint, text, text, text, text, interval, interval, boolean, text[], boolean, boolean, integer, boolean)',
    'EXECUTE');
SELECT has_table_privilege('public', 'ami_snapshot_verification', 'SELECT');
CREATE ROLE amis_verify_nobody;
SET ROLE amis_verify_nobody;
SELECT * FROM ami_snapshot_verify(1);
SELECT count(*) FROM ami_snapshot_verification;
RESET ROLE;
DROP ROLE amis_verify_nobody;

-- Some backups in the history, as the worker writes them.
TRUNCATE ami_snapshot_history RESTART IDENTITY;
SET ami_snapshot.helper_socket = '/nonexistent/ami-snapshot/helper.sock';
INSERT INTO ami_snapshot_history (request_id, name, status, with_freeze, started_at, image_id)
VALUES ('00000000-0000-4000-8000-000000000001', 'nightly', 'succeeded', true, now() - interval '2 days', NULL),
       ('00000000-0000-4000-8000-000000000002', 'nightly', 'succeeded', true, now() - interval '1 day', NULL),
       ('00000000-0000-4000-8000-000000000003', 'nightly', 'failed', true, now(), NULL),
       ('00000000-0000-4000-8000-000000000004', 'weekly ami', 'succeeded', true, now(), 'ami-0123456789abcdef0');
SELECT id, request_id, name, status FROM ami_snapshot_history ORDER BY id;

-- Which backup: exactly one of id, request_id, name.
SELECT * FROM ami_snapshot_verify();
SELECT * FROM ami_snapshot_verify(1, name => 'nightly');
SELECT * FROM ami_snapshot_verify(request_id => 'a/b');
SELECT * FROM ami_snapshot_verify(request_id => repeat('a', 65));
SELECT * FROM ami_snapshot_verify(name => 'x');
SELECT * FROM ami_snapshot_verify(999);
SELECT * FROM ami_snapshot_verify(name => 'never taken');
SELECT * FROM ami_snapshot_verify(3);

-- The options, each checked up front.
SELECT * FROM ami_snapshot_verify(1, check_sql => '');
SELECT * FROM ami_snapshot_verify(1, check_sql => repeat('x', 8193));
SELECT * FROM ami_snapshot_verify(1, check_db => 'postgres');
SELECT * FROM ami_snapshot_verify(1, check_sql => 'SELECT true', check_db => repeat('d', 64));
SELECT * FROM ami_snapshot_verify(1, check_sql => 'SELECT true', check_db => E'a\nb');
SELECT * FROM ami_snapshot_verify(1, time_budget => '-1 s');
SELECT * FROM ami_snapshot_verify(1, time_budget => '25 hours');
SELECT * FROM ami_snapshot_verify(1, time_budget => '1 month');
SELECT * FROM ami_snapshot_verify(1, timeout => '0');
SELECT * FROM ami_snapshot_verify(1, dump => NULL);
SELECT * FROM ami_snapshot_verify(1, dump_db => ARRAY['app']);
SELECT * FROM ami_snapshot_verify(1, dump => true, dump_db => ARRAY['app', NULL]);
SELECT * FROM ami_snapshot_verify(1, dump => true, dump_db => ARRAY[['a'], ['b']]);
SELECT * FROM ami_snapshot_verify(1, dump_globals => true);
SELECT * FROM ami_snapshot_verify(1, launch => true);
SELECT * FROM ami_snapshot_verify(4, launch => true, check_sql => 'SELECT true');
SELECT * FROM ami_snapshot_verify(4, tcp_port => 5432);
SELECT * FROM ami_snapshot_verify(4, launch => true, tcp_port => 0);
SELECT * FROM ami_snapshot_verify(1, error_on_failure => NULL);
-- Nothing ran: no verification row.
SELECT count(*) FROM ami_snapshot_verification;

-- No helper: a clear error, and the attempt is recorded (the latest
-- succeeded 'nightly' is backup 2).
SELECT * FROM ami_snapshot_verify(name => 'nightly', time_budget => '90 s');
SELECT * FROM ami_snapshot_verify(4, launch => true, tcp_port => 5432);
-- A request id not in this history goes to the helper as it is.
SELECT * FROM ami_snapshot_verify(request_id => '7d190fce-0000-4000-8000-00000000abcd');
SELECT backup_id, backup_request_id, image_id, launch, status, error_code,
       error_message LIKE 'could not connect to ami_snapshot helper%' AS no_helper,
       finished_at >= started_at AS ordered, detail IS NULL AS no_detail
  FROM ami_snapshot_verification ORDER BY id;

-- As an operator with EXECUTE only (doc/sql.md): the history is read for it.
CREATE ROLE amis_verifier;
GRANT EXECUTE ON FUNCTION ami_snapshot_verify(bigint, text, text, text, text, interval, interval, boolean, text[], boolean, boolean, integer, boolean) TO amis_verifier;
SET ROLE amis_verifier;
SELECT * FROM ami_snapshot_verify(2);
SELECT count(*) FROM ami_snapshot_verification;
RESET ROLE;
SELECT backup_id, status, username FROM ami_snapshot_verification ORDER BY id DESC LIMIT 1;
REVOKE ALL ON FUNCTION ami_snapshot_verify(bigint, text, text, text, text, interval, interval, boolean, text[], boolean, boolean, integer, boolean) FROM amis_verifier;
DROP ROLE amis_verifier;

-- The backup is still found under a hostile search_path.
CREATE SCHEMA amis_evil;
CREATE FUNCTION amis_evil.jsonb_array_elements(jsonb) RETURNS SETOF jsonb
    LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
SET search_path = amis_evil, public;
SELECT * FROM ami_snapshot_verify(1);
RESET search_path;
DROP SCHEMA amis_evil CASCADE;
DELETE FROM ami_snapshot_verification;
DELETE FROM ami_snapshot_history;
