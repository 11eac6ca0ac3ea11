--
-- The upgrade from 1.0 to 1.1: the history keeps its rows and gains the
-- image columns, the function gains image and allow_product_code_loss (the
-- update names the roles to grant it to again), and both work before and
-- after (without a helper: the failed attempts are recorded).
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

ALTER EXTENSION ami_snapshot UPDATE;
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

REVOKE ALL ON FUNCTION ami_snapshot(text, boolean, text, boolean) FROM amis_upgrade_operator;
DROP ROLE amis_upgrade_operator;
