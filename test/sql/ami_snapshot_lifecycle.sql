--
-- The lifecycle functions of 1.3 (doc/sql.md): every argument checked
-- before the helper is asked; without a helper, the attempt is an error
-- and a row of ami_snapshot_jobs; nothing is granted to PUBLIC.
--
-- (No CONTEXT lines: they name the functions' line numbers.)
\set SHOW_CONTEXT never
SET ami_snapshot.helper_socket = '/nonexistent/ami-snapshot/helper.sock';
-- Bad arguments: nothing runs, no row.
SELECT * FROM ami_snapshot_wait(NULL);
SELECT * FROM ami_snapshot_wait('r-1', timeout => '1 month');
SELECT * FROM ami_snapshot_wait('r-1', timeout => '2 days');
SELECT * FROM ami_snapshot_wait('r-1', poll => '0 s');
SELECT * FROM ami_snapshot_prune(policy => ' ; ');
SELECT * FROM ami_snapshot_prune(dry_run => NULL);
SELECT * FROM ami_snapshot_copy('r-1', NULL);
SELECT * FROM ami_snapshot_lock(NULL);
SELECT * FROM ami_snapshot_job_run('frobnicate', '{}');
SELECT * FROM ami_snapshot_job_run('list', '{system_id,1}');
SELECT * FROM ami_snapshot_job_run('list', '{name}');
SELECT count(*) AS no_rows_yet FROM ami_snapshot_jobs;
-- No helper: an error, and the row says so (list only reads: no row).
SELECT * FROM ami_snapshot_wait('r-1', timeout => '90.5 s');
SELECT * FROM ami_snapshot_prune('nightly:last=7;weekly-*:within=30d', dry_run => false);
SELECT * FROM ami_snapshot_lock('r-1', mode => 'governance', days => 7,
                                until => NULL, region => 'eu-west-1');
SELECT * FROM ami_snapshot_backups;
SELECT kind, backup, args, status, error_code, finished_at IS NOT NULL AS finished,
       username = current_user AS by_me
  FROM ami_snapshot_jobs ORDER BY id;
-- Privileges: nothing for PUBLIC.
CREATE ROLE amis_lifecycle_nobody;
SET ROLE amis_lifecycle_nobody;
SELECT * FROM ami_snapshot_prune();
SELECT * FROM ami_snapshot_backups;
SELECT * FROM ami_snapshot_job_run('list', '{}');
RESET ROLE;
DROP ROLE amis_lifecycle_nobody;
