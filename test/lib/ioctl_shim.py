"""
ioctl_shim.py - an LD_PRELOAD shim for the helper (and its watchdog, a
fork) that lets tests fault FIFREEZE/FITHAW from outside:

  * FITHAW fails with EIO while the file AMIS_TEST_FAIL_THAW names exists;
  * when AMIS_TEST_PAUSE_DIR/pause-freeze (pause-thaw) exists, the first
    FIFREEZE (FITHAW) that succeeds after it appeared removes it, creates
    pause-freeze.at (pause-thaw.at) and holds its caller PAUSE_MS before
    returning: a fault lands between the FIFREEZE of one filesystem and the
    next (between one FITHAW and the next).
"""

import subprocess

PAUSE_MS = 300
SHIM_SRC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <linux/fs.h>

int ioctl(int fd, unsigned long req, ...)
{
	static int (*real)(int, unsigned long, ...);
	const char *flag = getenv("AMIS_TEST_FAIL_THAW");
	const char *dir = getenv("AMIS_TEST_PAUSE_DIR");
	char arm[4096], at[4100];
	va_list ap;
	void *arg;
	int rc, saved;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!real)
		real = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
	if (req == FITHAW && flag && access(flag, F_OK) == 0) {
		errno = EIO;
		return -1;
	}
	rc = real(fd, req, arg);
	saved = errno;
	if (rc == 0 && dir && (req == FIFREEZE || req == FITHAW)) {
		snprintf(arm, sizeof(arm), "%s/pause-%s", dir, req == FIFREEZE ? "freeze" : "thaw");
		snprintf(at, sizeof(at), "%s.at", arm);
		if (unlink(arm) == 0) {
			int f = open(at, O_CREAT | O_WRONLY, 0600);

			if (f >= 0)
				close(f);
			usleep(PAUSE_MS * 1000);
		}
	}
	errno = saved;
	return rc;
}
""".replace("PAUSE_MS", str(PAUSE_MS))


def build(w):
    """Compiles the shim into the World's directory; returns its path."""
    shim, src = w.path("ioctl-shim.so"), w.path("ioctl-shim.c")
    with open(src, "w") as f:
        f.write(SHIM_SRC)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", shim, src, "-ldl"], check=True)
    return shim
