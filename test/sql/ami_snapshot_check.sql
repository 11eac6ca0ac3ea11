--
-- ami_snapshot_check() and ami_snapshot_status() without a helper: the
-- extension's own rows, and a row (not an error) saying the helper cannot
-- be reached; the status an error; the privileges.
--
\x on
SELECT pg_get_function_arguments('ami_snapshot_check'::regproc),
       pg_get_function_result('ami_snapshot_check'::regproc);
\x off
SELECT has_function_privilege('public', 'ami_snapshot_check(text)', 'EXECUTE');

SET ami_snapshot.helper_socket = '/nonexistent/ami-snapshot/helper.sock';
SELECT name, ok, hint IS NOT NULL AS has_hint FROM ami_snapshot_check();
SELECT detail FROM ami_snapshot_check() WHERE name = 'helper reachable';
SELECT name, detail FROM ami_snapshot_check() WHERE name = 'extension';

SELECT * FROM ami_snapshot_check(image => 'snapshot');

-- ami_snapshot_status(): its signature, and the unreachable helper an error.
\x on
SELECT pg_get_function_arguments('ami_snapshot_status'::regproc),
       pg_get_function_result('ami_snapshot_status'::regproc);
\x off
SELECT * FROM ami_snapshot_status();

-- Refused to a role without EXECUTE.
CREATE ROLE amis_check_nobody;
SET ROLE amis_check_nobody;
SELECT * FROM ami_snapshot_check();
SELECT * FROM ami_snapshot_status();
RESET ROLE;
DROP ROLE amis_check_nobody;
