/*
 * freeze.c - see freeze.h.
 */
#include "freeze.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/types.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif
/* Linux >= 5.13 (fs/ext4/ioctl.c); Debian 12's linux/ext4.h may lack it. */
#ifndef EXT4_IOC_CHECKPOINT
#define EXT4_IOC_CHECKPOINT _IOW('f', 43, __u32)
#endif

/* The claims' mapping: one page, a byte per entry (freeze.h, "Claims"). */
#define CLAIMS_SIZE FREEZE_CLAIMS_SIZE
_Static_assert(FREEZE_PLAN_MAX_FS <= FREEZE_CLAIMS_HDR_OFF, "one claim byte per entry");
_Static_assert(FREEZE_CLAIMS_HDR_OFF < FREEZE_CLAIMS_SIZE, "room for the header");
_Static_assert(__atomic_always_lock_free(sizeof(unsigned char), 0),
               "claims must be lock-free: the watchdog reads them");

static void claim_set(const struct freeze_plan *plan, size_t i, unsigned char v)
{
	if (plan->claimed && i < FREEZE_PLAN_MAX_FS)
		__atomic_store_n(&plan->claimed[i], v, __ATOMIC_SEQ_CST);
}

bool freeze_plan_claimed(const struct freeze_plan *plan, size_t i)
{
	return plan->claimed && i < FREEZE_PLAN_MAX_FS &&
	       __atomic_load_n(&plan->claimed[i], __ATOMIC_SEQ_CST) != 0;
}

void freeze_plan_unclaim(const struct freeze_plan *plan, size_t i)
{
	claim_set(plan, i, 0);
}

/* Maps the claims (all clear) unless mapped; -1 with err. */
static int claims_map(struct freeze_plan *plan, struct amis_err *err)
{
	void *p;

	if (!plan->claimed) {
		p = mmap(NULL, CLAIMS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
		         0);
		if (p == MAP_FAILED)
			return err_set(err, AMIS_E_FREEZE_FAILED,
			               "could not map the freeze claims shared with the "
			               "watchdog: %s",
			               strerror(errno));
		plan->claimed = p;
	}
	for (size_t i = 0; i < FREEZE_PLAN_MAX_FS; i++)
		claim_set(plan, i, 0);
	return 0;
}

static void claims_unmap(struct freeze_plan *plan)
{
	if (plan->claimed)
		munmap((void *)plan->claimed, CLAIMS_SIZE);
	plan->claimed = NULL;
}

int freeze_plan_claims_file(struct freeze_plan *plan, int dirfd, const char *name,
                            const char *tmp_name, const char *header, struct amis_err *err)
{
	size_t hlen = strlen(header);
	volatile unsigned char *p;
	void *m;
	int fd;

	if (freeze_plan_any_frozen(plan))
		return err_set(err, AMIS_E_BAD_STATE,
		               "the plan is frozen: its claims stay as they are");
	if (hlen >= CLAIMS_SIZE - FREEZE_CLAIMS_HDR_OFF)
		return err_set(err, AMIS_E_STATE_DIR, "claims header too long");
	claims_unmap(plan);
	/* A new inode each time: an earlier watchdog may still map the old one. */
	(void)unlinkat(dirfd, tmp_name, 0);
	fd = openat(dirfd, tmp_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return err_set(err, AMIS_E_STATE_DIR, "could not create %s: %s", tmp_name,
		               strerror(errno));
	if (ftruncate(fd, CLAIMS_SIZE) != 0) {
		err_set(err, AMIS_E_STATE_DIR, "could not size %s: %s", tmp_name, strerror(errno));
		goto fail_fd;
	}
	m = mmap(NULL, CLAIMS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		err_set(err, AMIS_E_STATE_DIR, "could not map %s: %s", tmp_name, strerror(errno));
		goto fail_fd;
	}
	/*
	 * Pre-fault: a store to every byte through the mapping takes the write
	 * fault now (page allocation, page_mkwrite), so that setting a claim
	 * while frozen is a plain store.  mlock() (best effort) keeps the page
	 * resident.
	 */
	p = m;
	for (size_t i = 0; i < CLAIMS_SIZE; i++)
		p[i] = i >= FREEZE_CLAIMS_HDR_OFF && i - FREEZE_CLAIMS_HDR_OFF < hlen
		           ? (unsigned char)header[i - FREEZE_CLAIMS_HDR_OFF]
		           : 0;
	(void)mlock(m, CLAIMS_SIZE);
	close(fd);
	if (renameat(dirfd, tmp_name, dirfd, name) != 0) {
		err_set(err, AMIS_E_STATE_DIR, "could not rename %s to %s: %s", tmp_name, name,
		        strerror(errno));
		munmap(m, CLAIMS_SIZE);
		(void)unlinkat(dirfd, tmp_name, 0);
		return -1;
	}
	plan->claimed = m;
	return 0;

fail_fd:
	close(fd);
	(void)unlinkat(dirfd, tmp_name, 0);
	return -1;
}

static int open_dir(const char *mount_point, struct amis_err *err)
{
	int fd = open(mount_point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		err_set(err,
		        errno == EACCES || errno == EPERM ? AMIS_E_PERMISSION_DENIED
		                                          : AMIS_E_FREEZE_FAILED,
		        "could not open %s: %s", mount_point, strerror(errno));
	return fd;
}

/* The error for a FIFREEZE that failed with errno e. */
static int freeze_error(int e, const char *label, struct amis_err *err)
{
	switch (e) {
	case EBUSY:
		return err_set(err, AMIS_E_ALREADY_FROZEN, "%s is already frozen", label);
	case EOPNOTSUPP:
		return err_set(err, AMIS_E_FREEZE_NOT_SUPPORTED,
		               "the filesystem at %s does not support freezing", label);
	case EPERM:
	case EACCES:
		return err_set(err, AMIS_E_PERMISSION_DENIED,
		               "not allowed to freeze %s (needs CAP_SYS_ADMIN): %s", label,
		               strerror(e));
	default:
		return err_set(err, AMIS_E_FREEZE_FAILED, "could not freeze %s: %s", label,
		               strerror(e));
	}
}

/* The error for a FITHAW that failed with errno e (not EINVAL: not frozen). */
static int thaw_error(int e, const char *label, struct amis_err *err)
{
	switch (e) {
	case EPERM:
	case EACCES:
		return err_set(err, AMIS_E_PERMISSION_DENIED,
		               "not allowed to thaw %s (needs CAP_SYS_ADMIN): %s", label,
		               strerror(e));
	default:
		return err_set(err, AMIS_E_THAW_FAILED, "could not thaw %s: %s", label,
		               strerror(e));
	}
}

static int fs_freeze_fd(int fd, const char *label, struct amis_err *err)
{
	if (ioctl(fd, FIFREEZE, 0) == 0)
		return 0;
	return freeze_error(errno, label, err);
}

int fs_thaw_fd(int fd, const char *label, bool *was_not_frozen, struct amis_err *err)
{
	if (was_not_frozen)
		*was_not_frozen = false;
	if (ioctl(fd, FITHAW, 0) == 0)
		return 0;
	if (errno == EINVAL) { /* thaw_super(): not frozen */
		if (was_not_frozen)
			*was_not_frozen = true;
		return 0;
	}
	return thaw_error(errno, label, err);
}

int fs_freeze(const char *mount_point, struct amis_err *err)
{
	int fd = open_dir(mount_point, err);
	int rc;

	if (fd < 0)
		return -1;
	rc = fs_freeze_fd(fd, mount_point, err);
	close(fd);
	return rc;
}

int fs_thaw(const char *mount_point, bool *was_not_frozen, struct amis_err *err)
{
	int fd = open(mount_point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (was_not_frozen)
		*was_not_frozen = false;
	if (fd < 0)
		return err_set(err,
		               errno == EACCES || errno == EPERM ? AMIS_E_PERMISSION_DENIED
		                                                 : AMIS_E_THAW_FAILED,
		               "could not open %s: %s", mount_point, strerror(errno));
	rc = fs_thaw_fd(fd, mount_point, was_not_frozen, err);
	close(fd);
	return rc;
}

/* Opens fs's mount point and checks it is still the mount that was resolved. */
static int open_checked(struct freeze_fs *fs, struct amis_err *err)
{
	struct statx stx;
	int fd = open_dir(fs->mount_point, err);

	if (fd < 0)
		return -1;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) < 0) {
		err_set(err, AMIS_E_FREEZE_FAILED, "could not statx %s: %s", fs->mount_point,
		        strerror(errno));
		close(fd);
		return -1;
	}
	if (fs->mount_id > 0 && (stx.stx_mask & STATX_MNT_ID) &&
	    stx.stx_mnt_id != (unsigned long long)fs->mount_id) {
		err_set(err, AMIS_E_MOUNT_CHANGED,
		        "%s is mount %llu now, not mount %d as resolved; refusing to touch it",
		        fs->mount_point, (unsigned long long)stx.stx_mnt_id, fs->mount_id);
		close(fd);
		return -1;
	}
	/* Kernels before 5.8 have no mount id: at least the device must match. */
	if (fs->mount_id > 0 && !(stx.stx_mask & STATX_MNT_ID) &&
	    (stx.stx_dev_major != fs->dev_major || stx.stx_dev_minor != fs->dev_minor)) {
		err_set(err, AMIS_E_MOUNT_CHANGED,
		        "%s is on device %u:%u now, not %u:%u as resolved; refusing to touch it",
		        fs->mount_point, stx.stx_dev_major, stx.stx_dev_minor, fs->dev_major,
		        fs->dev_minor);
		close(fd);
		return -1;
	}
	fs->fd = fd;
	return 0;
}

/*
 * Parallel freezing.  Each FIFREEZE writes back what was dirtied since the
 * preparation (prepare_one(): syncfs(), ext4 journal checkpoint) and, on
 * ext4, checkpoints the journal again, several ms each: one after another,
 * the window pays their sum; side by side, about the slowest.
 *
 * Children before parents still holds: the plan's entries are grouped in
 * levels (plan_levels()), level 0 frozen first, all its entries at once;
 * the next level once every FIFREEZE of the previous one has returned.
 * The thaw goes the other way, level by level from the top.  Without
 * nested mounts there is one level: one parallel step.
 *
 * The threads (a pool, one fewer than the widest level: the calling thread
 * takes its share) are started by freeze_plan_freeze() before the first
 * FIFREEZE, not by freeze_plan_open(): the caller forks its watchdog in
 * between, and a fork copies only the calling thread.  They do the ioctl and
 * take its timestamps, nothing else: no locks held meanwhile, no logging,
 * no allocation.  They are stopped once nothing is frozen any more, and by
 * freeze_plan_close().  Without a pool (one entry per level, or no thread
 * could be started) the calling thread does the same steps alone.
 */
enum step_op { STEP_FREEZE, STEP_THAW };

/* One step: the same ioctl on some entries of one level, in parallel. */
struct step {
	struct freeze_plan *plan;
	enum step_op op;
	size_t n, idx[FREEZE_PLAN_MAX_FS]; /* plan entries, in plan order */
	int err[FREEZE_PLAN_MAX_FS];       /* per entry: 0, or the ioctl's errno */
	size_t next, left;                 /* the next to take; not done yet */
};

struct freeze_pool {
	pthread_mutex_t mu; /* guards everything below and the current step's next, left */
	pthread_cond_t work, done;
	struct step *step; /* the current step, or NULL */
	unsigned long gen; /* bumped for each step */
	bool exit;
	size_t nthreads;
	pthread_t threads[FREEZE_PLAN_MAX_FS];
};

/*
 * Entry k of s: the ioctl, its claim (freeze.h, "Claims") and its
 * timestamps, and nothing else.
 */
static void step_one(struct step *s, size_t k)
{
	struct freeze_fs *fs = &s->plan->fs[s->idx[k]];
	long long start, end;
	int rc, e;

	/* Claimed before FIFREEZE: a SIGKILL right after it must not orphan it. */
	if (s->op == STEP_FREEZE)
		claim_set(s->plan, s->idx[k], 1);
	/* Writes block from the moment FIFREEZE starts, not when it returns. */
	start = mono_usec();
	rc = ioctl(fs->fd, s->op == STEP_FREEZE ? FIFREEZE : FITHAW, 0);
	e = rc == 0 ? 0 : errno;
	end = mono_usec();

	if (s->op == STEP_FREEZE && rc == 0) {
		fs->frozen_at_usec = start;
		fs->freeze_returned_usec = end;
	} else if (s->op == STEP_FREEZE) {
		/* EBUSY: someone else's freeze, which the watchdog must leave alone. */
		claim_set(s->plan, s->idx[k], 0);
	} else if (rc == 0 || e == EINVAL) { /* EINVAL: not frozen */
		claim_set(s->plan, s->idx[k], 0);
		fs->thawed_at_usec = end;
	}
	s->err[k] = e;
}

/* Takes and does entries of s until none is left; p->mu held (if p). */
static void step_work(struct freeze_pool *p, struct step *s)
{
	while (s->next < s->n) {
		size_t k = s->next++;

		if (p)
			pthread_mutex_unlock(&p->mu);
		step_one(s, k);
		if (p)
			pthread_mutex_lock(&p->mu);
		if (--s->left == 0 && p)
			pthread_cond_signal(&p->done);
	}
}

static void *pool_thread(void *arg)
{
	struct freeze_pool *p = arg;
	unsigned long seen = 0;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->exit && p->gen == seen)
			pthread_cond_wait(&p->work, &p->mu);
		if (p->exit)
			break;
		seen = p->gen;
		if (p->step) /* NULL: that step was done without us */
			step_work(p, p->step);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Runs s with p's threads (or alone, p NULL); returns when all of s is done. */
static void step_run(struct freeze_pool *p, struct step *s)
{
	s->next = 0;
	s->left = s->n;
	if (!p || s->n < 2) {
		step_work(NULL, s);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->step = s;
	p->gen++;
	pthread_cond_broadcast(&p->work);
	step_work(p, s); /* our share: the first entry without waiting for a wake-up */
	while (s->left > 0)
		pthread_cond_wait(&p->done, &p->mu);
	p->step = NULL;
	pthread_mutex_unlock(&p->mu);
}

static void pool_stop(struct freeze_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->exit = true;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->mu);
	for (size_t i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->work);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/*
 * Starts width - 1 threads; NULL (the caller works alone) if width < 2 or
 * none could be started.  They run with every signal blocked: the helper's
 * signals must reach its main thread, whose poll() they interrupt.
 */
static struct freeze_pool *pool_start(size_t width)
{
	struct freeze_pool *p;
	sigset_t all, old;

	if (width < 2 || !(p = calloc(1, sizeof(*p))))
		return NULL;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	while (p->nthreads < width - 1 &&
	       pthread_create(&p->threads[p->nthreads], NULL, pool_thread, p) == 0)
		p->nthreads++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (p->nthreads == 0) {
		pool_stop(p);
		return NULL;
	}
	return p;
}

/* Whether mount point a is strictly below mount point b. */
static bool mount_below(const char *a, const char *b)
{
	size_t n = strlen(b);

	if (strcmp(b, "/") == 0)
		return strcmp(a, "/") != 0;
	return strncmp(a, b, n) == 0 && a[n] == '/';
}

/*
 * level[i]: 0 for an entry with no other entry below it, else one more than
 * the highest level below it (its height in the forest of mount points).
 * Freezing level by level from 0 puts every child before its parent, in
 * whatever order the plan lists them.  *width: the most entries of a level.
 * Returns the number of levels.
 */
static int plan_levels(const struct freeze_plan *plan, int level[], size_t *width)
{
	size_t count[FREEZE_PLAN_MAX_FS] = {0};
	int nlevels = 0;
	bool changed;

	for (size_t i = 0; i < plan->nfs; i++)
		level[i] = 0;
	do { /* ends: "below" has no cycles; twice through when children come first */
		changed = false;
		for (size_t i = 0; i < plan->nfs; i++)
			for (size_t j = 0; j < plan->nfs; j++)
				if (level[i] <= level[j] &&
				    mount_below(plan->fs[j].mount_point, plan->fs[i].mount_point)) {
					level[i] = level[j] + 1;
					changed = true;
				}
	} while (changed);
	if (width)
		*width = 0;
	for (size_t i = 0; i < plan->nfs; i++) {
		if (level[i] + 1 > nlevels)
			nlevels = level[i] + 1;
		if (width && ++count[level[i]] > *width)
			*width = count[level[i]];
	}
	return nlevels;
}

/* Stops the threads once nothing is frozen: none idle between operations. */
static void pool_stop_if_thawed(struct freeze_plan *plan)
{
	if (!freeze_plan_any_frozen(plan)) {
		pool_stop(plan->pool);
		plan->pool = NULL;
	}
}

void freeze_plan_close(struct freeze_plan *plan)
{
	pool_stop(plan->pool);
	plan->pool = NULL;
	for (size_t i = 0; i < plan->nfs; i++) {
		if (plan->fs[i].fd >= 0)
			close(plan->fs[i].fd);
		plan->fs[i].fd = -1;
	}
	if (!freeze_plan_any_frozen(plan))
		claims_unmap(plan);
}

/* Records a failed thaw of fs (terr) in err; see thaw_levels(). */
static void thaw_failed(struct amis_err *err, bool rollback, const struct freeze_fs *fs,
                        const struct amis_err *terr, int *rc)
{
	if (rollback)
		err_append(err, "and could not thaw %s again, it is still frozen: %s",
		           fs->mount_point, terr->msg);
	else if (*rc == 0 && err)
		*err = *terr;
	else
		err_append(err, "%s", terr->msg);
	*rc = -1;
}

/*
 * Thaws every entry still frozen, level by level from the top (children
 * last), each level in parallel, attempting all of them.  A thawed entry
 * gets frozen = false and its directory closed; a failed one stays frozen.
 * Failures: the first is err and later ones are appended, or (rollback)
 * all are appended to err, the freeze error.
 */
static int thaw_levels(struct freeze_plan *plan, bool rollback, struct amis_err *err)
{
	int level[FREEZE_PLAN_MAX_FS];
	int rc = 0;
	struct step s;

	s.plan = plan;
	s.op = STEP_THAW;
	for (int l = plan_levels(plan, level, NULL); l-- > 0;) {
		s.n = 0;
		for (size_t i = 0; i < plan->nfs; i++) {
			struct freeze_fs *fs = &plan->fs[i];
			struct amis_err terr;

			if (!fs->frozen || level[i] != l)
				continue;
			/* A retry after a failed thaw: reopen, and only the mount we froze. */
			err_clear(&terr);
			if (fs->fd < 0 && open_checked(fs, &terr) < 0) {
				if (err_is(&terr, AMIS_E_FREEZE_FAILED))
					snprintf(terr.code, sizeof(terr.code), "ThawFailed");
				err_prefix(&terr, "could not thaw %s", fs->mount_point);
				thaw_failed(err, rollback, fs, &terr, &rc);
				continue;
			}
			s.idx[s.n++] = i;
		}
		step_run(plan->pool, &s);
		/* Reported in reverse plan order, the order of the sequential thaw. */
		for (size_t k = s.n; k-- > 0;) {
			struct freeze_fs *fs = &plan->fs[s.idx[k]];
			struct amis_err terr;

			if (s.err[k] == 0 || s.err[k] == EINVAL) {
				fs->frozen = false;
				fs->thaw_found_thawed = s.err[k] == EINVAL;
				close(fs->fd);
				fs->fd = -1;
				continue;
			}
			err_clear(&terr);
			thaw_error(s.err[k], fs->mount_point, &terr);
			thaw_failed(err, rollback, fs, &terr, &rc);
		}
	}
	return rc;
}

/*
 * Preparing a filesystem for its freeze, while writers still run.  FIFREEZE
 * blocks new writes first and then does its work: it writes back what is
 * dirty (sync_filesystem()) and, on ext4, flushes the whole journal
 * (ext4_freeze(): jbd2_journal_flush(), which writes every committed
 * metadata block to its place) and the superblock.  All of that happens
 * with the database stalled.  A syncfs() and an EXT4_IOC_CHECKPOINT (the
 * same journal flush) just before leave FIFREEZE only what was written
 * meanwhile.  The checkpoint itself holds the journal's updates while it
 * runs (jbd2_journal_lock_updates()): a short stall of its own, outside the
 * freeze window and without the EC2 call in it.
 */
struct prep {
	struct freeze_fs *fs;
	int ckpt_errno; /* 0, or why EXT4_IOC_CHECKPOINT failed */
	pthread_t thread;
	bool started;
};

static void prepare_one(struct prep *p)
{
	__u32 flags = 0;

	p->ckpt_errno = 0;
	/* Errors are not fatal: FIFREEZE syncs and flushes again. */
	(void)syncfs(p->fs->fd);
	if (strcmp(p->fs->fstype, "ext4") == 0 && ioctl(p->fs->fd, EXT4_IOC_CHECKPOINT, &flags) < 0)
		p->ckpt_errno = errno;
}

static void *prepare_thread(void *arg)
{
	prepare_one(arg);
	return NULL;
}

/*
 * Prepares every filesystem of the plan, in parallel (one thread each, all
 * signals blocked, joined before returning: nothing is left running across
 * the watchdog's fork), and warns about checkpoints that failed otherwise
 * than "not available".
 */
static void prepare_all(struct freeze_plan *plan)
{
	struct prep p[FREEZE_PLAN_MAX_FS];
	sigset_t all, old;
	size_t i;

	memset(p, 0, sizeof(p));
	for (i = 0; i < plan->nfs; i++)
		p[i].fs = &plan->fs[i];
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 1; i < plan->nfs; i++)
		p[i].started = pthread_create(&p[i].thread, NULL, prepare_thread, &p[i]) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (plan->nfs > 0)
		prepare_one(&p[0]);
	for (i = 1; i < plan->nfs; i++) {
		if (p[i].started)
			pthread_join(p[i].thread, NULL);
		else
			prepare_one(&p[i]);
	}
	for (i = 0; i < plan->nfs; i++) {
		switch (p[i].ckpt_errno) {
		case 0:
		case ENOTTY:     /* not ext4 after all, or a kernel before 5.13 */
		case EOPNOTSUPP: /* also ENOTSUP */
		case EINVAL:     /* flags this kernel does not know */
		case ENODEV:     /* ext4 without a journal */
			break;
		default:
			log_warn("could not checkpoint the journal of %s before freezing it "
			         "(EXT4_IOC_CHECKPOINT): %s; the freeze does it instead",
			         plan->fs[i].mount_point, strerror(p[i].ckpt_errno));
		}
	}
}

int freeze_plan_open(struct freeze_plan *plan, struct amis_err *err)
{
	size_t i;

	for (i = 0; i < plan->nfs; i++)
		if (plan->fs[i].frozen || plan->fs[i].fd >= 0)
			return err_set(err, AMIS_E_BAD_STATE, "%s is already frozen by this plan",
			               plan->fs[i].mount_point);
	if (claims_map(plan, err) < 0)
		return -1;
	for (i = 0; i < plan->nfs; i++) {
		struct freeze_fs *fs = &plan->fs[i];

		fs->frozen = false;
		fs->thaw_found_thawed = false;
		fs->frozen_at_usec = 0;
		fs->thawed_at_usec = 0;
		if (open_checked(fs, err) < 0) {
			freeze_plan_close(plan);
			return -1;
		}
	}
	prepare_all(plan);
	return 0;
}

/* Opened by freeze_plan_open() and not frozen yet. */
static bool plan_is_open(const struct freeze_plan *plan)
{
	for (size_t i = 0; i < plan->nfs; i++)
		if (plan->fs[i].frozen || plan->fs[i].fd < 0)
			return false;
	return plan->nfs > 0;
}

int freeze_plan_freeze(struct freeze_plan *plan, struct amis_err *err)
{
	int level[FREEZE_PLAN_MAX_FS], nlevels, rc = 0;
	size_t width;
	struct step s;

	if (!plan_is_open(plan) && freeze_plan_open(plan, err) < 0)
		return -1;
	nlevels = plan_levels(plan, level, &width);
	/* Thread creation (~50 us each) comes before the first FIFREEZE. */
	if (!plan->pool)
		plan->pool = pool_start(width);

	/* From here until the thaw: no path lookups, no logging. */
	s.plan = plan;
	s.op = STEP_FREEZE;
	for (int l = 0; l < nlevels && rc == 0; l++) {
		s.n = 0;
		for (size_t i = 0; i < plan->nfs; i++)
			if (level[i] == l)
				s.idx[s.n++] = i;
		step_run(plan->pool, &s);
		for (size_t k = 0; k < s.n; k++) {
			struct freeze_fs *fs = &plan->fs[s.idx[k]];

			if (s.err[k] == 0)
				fs->frozen = true;
			else if (rc == 0)
				rc = freeze_error(s.err[k], fs->mount_point, err);
		}
	}
	if (rc == 0)
		return 0;

	/* Roll back: thaw what we froze (in this level too), children last. */
	thaw_levels(plan, true, err);
	for (size_t i = 0; i < plan->nfs; i++)
		if (!plan->fs[i].frozen && plan->fs[i].fd >= 0) {
			close(plan->fs[i].fd);
			plan->fs[i].fd = -1;
		}
	pool_stop_if_thawed(plan);
	return -1;
}

int freeze_plan_thaw(struct freeze_plan *plan, struct amis_err *err)
{
	int rc = thaw_levels(plan, false, err);

	pool_stop_if_thawed(plan);
	return rc;
}

bool freeze_plan_any_frozen(const struct freeze_plan *plan)
{
	for (size_t i = 0; i < plan->nfs; i++)
		if (plan->fs[i].frozen)
			return true;
	return false;
}

long long freeze_plan_window_usec(const struct freeze_plan *plan)
{
	long long first = 0, last = 0;

	for (size_t i = 0; i < plan->nfs; i++) {
		const struct freeze_fs *fs = &plan->fs[i];

		if (fs->frozen)
			return -1;
		if (!fs->frozen_at_usec)
			continue;
		if (!first || fs->frozen_at_usec < first)
			first = fs->frozen_at_usec;
		if (fs->thawed_at_usec > last)
			last = fs->thawed_at_usec;
	}
	return first ? last - first : -1;
}
