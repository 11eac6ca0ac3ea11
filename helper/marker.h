/*
 * marker.h - the persisted "frozen" marker (DESIGN.md "Freezing facts").
 *
 * Before freezing, the helper writes STATE_DIR/frozen listing what it is
 * about to freeze, one filesystem a line:
 *
 *	MOUNT_ID MAJOR:MINOR MOUNT_POINT
 *
 * after a line "boot_id ID" (/proc/sys/kernel/random/boot_id), and removes
 * it once everything is thawed (the watchdog removes it too after its own
 * thaw).  If the helper and its watchdog both die while frozen, nothing else
 * would ever thaw: a helper started later finds the marker and thaws what it
 * lists (marker_recover()).  A freeze belongs to a superblock, and a
 * restarted helper may be in a new mount namespace (systemd's PrivateTmp)
 * where mount ids differ: a line is identified by its device, through the
 * listed mount point if it is still that device, else through any mount of
 * the device in /proc/self/mountinfo.  MOUNT_ID is informational.
 *
 * The marker is written before the freeze (temporary file, fsync, rename)
 * and removed after the thaw: never while frozen.  state_dir must not be on
 * a filesystem of the plan (marker_check_dir()).
 */
#ifndef AMIS_MARKER_H
#define AMIS_MARKER_H

#include "util.h"
#include "volumes.h"

#define MARKER_FILE "frozen"

/* -1 with err ("StateDirFrozen", "StateDir") if state_dir is unusable for plan. */
int marker_check_dir(const char *state_dir, const struct freeze_plan *plan, struct amis_err *err);

/* Writes the marker for plan durably; -1 with err ("StateDir"). */
int marker_write(const char *state_dir, const struct freeze_plan *plan, const char *request_id,
                 struct amis_err *err);

/* Removes it; -1 with err ("StateDir") if it exists and cannot be removed. */
int marker_remove(const char *state_dir, struct amis_err *err);

/*
 * At start-up: if a marker exists, thaws what it lists (logged at error
 * level: it means a helper died while frozen) and removes it.  Returns 0
 * when every entry was found and thawed (or was not frozen), -1 when one
 * could not be found (no mount of its device) or thawed: the marker is then
 * kept, for the next start or the administrator.  A marker from another
 * boot is removed (logged) without touching anything.
 */
int marker_recover(const char *state_dir);

/* For tests: read these instead of /proc's files (NULL: the real one). */
void marker_set_test_paths(const char *mountinfo, const char *boot_id);

#endif
