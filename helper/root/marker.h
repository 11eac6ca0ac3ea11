/*
 * marker.h - the persisted "frozen" marker (doc/design.md, "Never leaving
 * anything frozen", rule 6).
 *
 * Before freezing, the helper writes STATE_DIR/frozen listing what it is
 * about to freeze, one filesystem a line:
 *
 *	MOUNT_ID MAJOR:MINOR MOUNT_POINT
 *
 * after a line "boot_id ID" (/proc/sys/kernel/random/boot_id) and a line
 * "claims TOKEN" (see below), in plan order, and removes
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
 *
 * Only what the helper froze is thawed: the kernel does not say who froze a
 * filesystem, and one an administrator froze meanwhile (our FIFREEZE: EBUSY)
 * must stay frozen.  So the freeze claims (freeze.h, "Claims": one byte per
 * plan entry, set before its FIFREEZE, cleared when it fails and after a
 * thaw) live in STATE_DIR/frozen.claims, a one-page file mapped MAP_SHARED
 * by helper and watchdog (freeze_plan_claims_file()), created and
 * pre-faulted by marker_write() before the marker (a new file each time,
 * renamed into place).  Its header (freeze.h, FREEZE_CLAIMS_HDR_OFF) holds
 * the marker's boot id, a random token that the marker names on its
 * "claims" line, and the number of entries.  Marker line k (entries only)
 * is claim byte k.  Recovery thaws only the entries whose byte is set; it
 * thaws everything listed, as before claims existed, when the marker names
 * no claims file or the file is missing, unreadable, not one page, or its
 * header does not match: erring towards never leaving our own freeze.
 * If state_dir cannot host the file, marker_write() warns and the claims
 * stay anonymous (freeze_plan_open() maps them); the marker then names none.
 *
 * Setting a claim while frozen is a store to an already write-faulted page:
 * no syscall.  On tmpfs (/run, the default) nothing can block it (tmpfs
 * does not freeze; mlock() keeps the page from swap).  On a disk
 * filesystem, writeback of the dirty page write-protects it again and the
 * next store faults into page_mkwrite(), which waits only while state_dir's
 * own filesystem is frozen (sb_start_pagefault()), never ours
 * (marker_check_dir()); an administrator freezing state_dir's filesystem
 * meanwhile could stall that store.  Hence /run.
 *
 * The claims file is removed with the marker, after it (marker_remove(), and
 * the watchdog by unlinkat() after its thaw): a claims file without its
 * marker means nothing.
 */
#ifndef AMIS_MARKER_H
#define AMIS_MARKER_H

#include "util.h"
#include "volumes.h"

#define MARKER_FILE "frozen"
/* The freeze claims backing file, beside it (see above). */
#define CLAIMS_FILE "frozen.claims"

/* -1 with err ("StateDirFrozen", "StateDir") if state_dir is unusable for plan. */
int marker_check_dir(const char *state_dir, const struct freeze_plan *plan, struct amis_err *err);

/*
 * Creates the claims file and maps it as plan's claims (a warning and
 * anonymous claims if it cannot), then writes the marker for plan durably;
 * -1 with err ("StateDir"), and then no claims file is left (the plan may
 * keep its mapping: freeze_plan_close() unmaps it).
 */
int marker_write(const struct sys_paths *sp, const char *state_dir, struct freeze_plan *plan,
                 const char *request_id, struct amis_err *err);

/*
 * Removes it, then its claims file; -1 with err ("StateDir") if the marker
 * exists and cannot be removed (a claims file that cannot: a warning).
 */
int marker_remove(const char *state_dir, struct amis_err *err);

/*
 * At start-up: if a marker exists, thaws what it lists that the helper
 * froze by its claims file (everything it lists without a valid claims
 * file; see above), logged at error level (it means a helper died while
 * frozen), and removes marker and claims file.  An entry not claimed is
 * left alone (a warning), not even looked for.  Returns 0 when every entry
 * to thaw was found and thawed (or was not frozen), -1 when one could not
 * be found (no mount of its device) or thawed: marker and claims file are
 * then kept, for the next start or the administrator.  A marker from
 * another boot is removed (logged) without touching anything.
 */
int marker_recover(const struct sys_paths *sp, const char *state_dir);

#endif
