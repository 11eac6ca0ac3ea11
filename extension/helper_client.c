/*
 * helper_client.c - see helper_client.h.
 */
#include "postgres.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "helper_client.h"

struct HelperConn
{
	pgsocket	sock;
	char		path[MAXPGPATH];
	unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	size_t		len;
	char		error_code[65];
	bool		have_error;		/* error below is the last ERROR received */
	struct amsp_msgview error;	/* views into buf */
	bool		image_asked;	/* the PREPARE asked for an image */
	bool		job_asked;		/* a JOB was sent */
	bool		check_asked;	/* a CHECK was sent */
	bool		standby_asked;	/* the PREPARE carried the standby's fields */
};

/* ERROR HelperTooOld: the helper closed the connection on a newer request. */
static void
too_old(HelperConn *hc, const char *what, const char *detail)
{
	strlcpy(hc->error_code, "HelperTooOld", sizeof(hc->error_code));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("ami_snapshot helper failed during %s: HelperTooOld", what),
			 errdetail_internal("%s", detail),
			 errhint("Upgrade ami-snapshot-helper.")));
}

/* Milliseconds left until deadline (0 or less: it passed). */
static long
ms_left(TimestampTz deadline)
{
	long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

	return ms;
}

/*
 * What a backend waiting for the helper shows in pg_stat_activity:
 * wait_event "AmiSnapshotHelper" (a custom wait event, PostgreSQL 17 on),
 * before 17 the generic "Extension".
 */
static uint32
helper_wait_event(void)
{
#if PG_VERSION_NUM >= 170000
	static uint32 wait_event = 0;

	if (wait_event == 0)
		wait_event = WaitEventExtensionNew("AmiSnapshotHelper");
	return wait_event;
#else
	return PG_WAIT_EXTENSION;
#endif
}

/* Waits for the socket; ERROR on timeout. */
static void
wait_socket(HelperConn *hc, int event, TimestampTz deadline, const char *what)
{
	for (;;)
	{
		long		timeout = ms_left(deadline);
		int			rc;

		CHECK_FOR_INTERRUPTS();
		if (timeout <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("timed out waiting for the ami_snapshot helper (%s)", what),
					 errhint("The limit is ami_snapshot.request_timeout.")));
		rc = WaitLatchOrSocket(MyLatch,
							   WL_LATCH_SET | event | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							   hc->sock, timeout, helper_wait_event());
		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);
		if (rc & event)
			return;
	}
}

HelperConn *
helper_connect(const char *path, int timeout_ms)
{
	HelperConn *hc;
	struct sockaddr_un sa;
	TimestampTz deadline;

	if (strlen(path) >= sizeof(sa.sun_path))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ami_snapshot.helper_socket is too long: \"%s\"", path)));
	if (!AcquireExternalFD())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not connect to ami_snapshot helper: too many open files")));

	hc = palloc0(sizeof(HelperConn));
	strlcpy(hc->path, path, sizeof(hc->path));
	hc->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (hc->sock == PGINVALID_SOCKET)
	{
		ReleaseExternalFD();
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create socket for ami_snapshot helper: %m")));
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	while (connect(hc->sock, (struct sockaddr *) &sa, sizeof(sa)) != 0)
	{
		int			save_errno = errno;

		/*
		 * On a UNIX socket EAGAIN means the helper's backlog is full and
		 * nothing is in progress: wait a little and try again.
		 */
		if (save_errno == EAGAIN && ms_left(deadline) > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 10, helper_wait_event());
			ResetLatch(MyLatch);
			PG_TRY();
			{
				CHECK_FOR_INTERRUPTS();
			}
			PG_CATCH();
			{
				helper_close(hc);
				PG_RE_THROW();
			}
			PG_END_TRY();
			continue;
		}
		if (save_errno == EINPROGRESS)
		{
			int			soerr = 0;
			socklen_t	sl = sizeof(soerr);

			PG_TRY();
			{
				wait_socket(hc, WL_SOCKET_WRITEABLE, deadline, "connect");
			}
			PG_CATCH();
			{
				helper_close(hc);
				PG_RE_THROW();
			}
			PG_END_TRY();
			if (getsockopt(hc->sock, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
				return hc;
			save_errno = soerr;
		}
		helper_close(hc);
		errno = save_errno;
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to ami_snapshot helper at \"%s\": %m", path),
				 errhint("Is ami-snapshot-helper running, and does ami_snapshot.helper_socket name its socket?")));
	}
	return hc;
}

void
helper_send(HelperConn *hc, const unsigned char *frame, size_t len, int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	while (len > 0)
	{
		ssize_t		n = send(hc->sock, frame, len, MSG_NOSIGNAL);

		if (n < 0)
		{
			if (errno == EAGAIN || errno == EWOULDBLOCK)
			{
				wait_socket(hc, WL_SOCKET_WRITEABLE, deadline, "send");
				continue;
			}
			if (errno == EINTR)
				continue;
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not send request to ami_snapshot helper: %m")));
		}
		frame += n;
		len -= (size_t) n;
	}
}

static void
recv_exact(HelperConn *hc, size_t want, TimestampTz deadline, const char *what)
{
	while (hc->len < want)
	{
		ssize_t		n = recv(hc->sock, hc->buf + hc->len, want - hc->len, 0);

		/*
		 * A helper older than images refuses PREPARE's image fields as
		 * malformed and closes the connection without an answer; one older
		 * than jobs refuses the JOB request the same way.
		 */
		if ((n == 0 || (n < 0 && errno == ECONNRESET)) &&
			hc->check_asked && strcmp(what, "check") == 0)
			too_old(hc, what, "The helper is too old for the preflight check: it closed the connection when asked for one (a helper without the check refuses the CHECK request as malformed).");
		if ((n == 0 || (n < 0 && errno == ECONNRESET)) &&
			hc->standby_asked && !hc->image_asked && strcmp(what, "prepare") == 0)
			too_old(hc, what, "The helper is too old for snapshots of a hot standby: it closed the connection when the request carried the standby's fields (a helper without standby support refuses them as malformed).");
		if ((n == 0 || (n < 0 && errno == ECONNRESET)) &&
			((hc->image_asked && strcmp(what, "prepare") == 0) ||
			 (hc->job_asked && strcmp(what, "job") == 0)))
		{
			bool		image = strcmp(what, "prepare") == 0;

			strlcpy(hc->error_code, "HelperTooOld", sizeof(hc->error_code));
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("ami_snapshot helper failed during %s: HelperTooOld", what),
					 image ?
					 errdetail("The helper is too old for images: it closed the connection when asked for an AMI (a helper without AMI support refuses the image fields of the request as malformed).") :
					 errdetail("The helper is too old for jobs: it closed the connection when asked to run one (a helper without jobs refuses the JOB request as malformed)."),
					 image ?
					 errhint("Upgrade ami-snapshot-helper; snapshot sets (image => NULL) work with this helper.") :
					 errhint("Upgrade ami-snapshot-helper, or run \"ami-snapshot verify\" as root.")));
		}
		if (n == 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("ami_snapshot helper closed the connection during %s", what),
					 errhint("See the helper's log (journalctl -u ami-snapshot-helper).")));
		if (n < 0)
		{
			if (errno == EAGAIN || errno == EWOULDBLOCK)
			{
				wait_socket(hc, WL_SOCKET_READABLE, deadline, what);
				continue;
			}
			if (errno == EINTR)
				continue;
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not receive from ami_snapshot helper: %m")));
		}
		hc->len += (size_t) n;
	}
}

void
helper_receive(HelperConn *hc, struct amsp_msgview *msg, uint16 expected_type,
			   const char *what, int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	const char *why = NULL;
	long		plen;

	hc->len = 0;
	hc->have_error = false;
	recv_exact(hc, AMSP_HEADER_LEN, deadline, what);
	plen = amsp_header_payload_len(hc->buf, &why);
	if (plen < 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid response from ami_snapshot helper: %s", why)));
	recv_exact(hc, AMSP_HEADER_LEN + (size_t) plen, deadline, what);
	if (amsp_decode(hc->buf, hc->len, msg, &why) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid response from ami_snapshot helper: %s", why)));

	if (msg->type == AMSP_ERROR)
	{
		char		code[65];
		char		message[2049];
		char		stage[33] = "";
		StringInfoData snaps;
		size_t		i;

		/* Kept for helper_last_error(): what the helper knew of the failure. */
		hc->error = *msg;
		hc->have_error = true;
		amsp_copy_str(amsp_get(msg, AMSP_T_ERROR_CODE), code, sizeof(code));
		amsp_copy_str(amsp_get(msg, AMSP_T_ERROR_MESSAGE), message, sizeof(message));
		amsp_copy_str(amsp_get(msg, AMSP_T_ERROR_STAGE), stage, sizeof(stage));
		strlcpy(hc->error_code, code, sizeof(hc->error_code));
		initStringInfo(&snaps);
		for (i = 0; i < amsp_count(msg, AMSP_T_SNAPSHOT_ID); i++)
		{
			char		id[65];

			amsp_copy_str(amsp_get_nth(msg, AMSP_T_SNAPSHOT_ID, i), id, sizeof(id));
			appendStringInfo(&snaps, "%s%s", i ? ", " : "", id);
		}
		if (snaps.len > 0)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("ami_snapshot helper failed during %s: %s", what, code),
					 errdetail("%s", message),
					 errhint("Snapshots created before the failure are tagged ami-snapshot:backup-state=failed: %s.",
							 snaps.data)));
		ereport(ERROR,
				(errcode((strcmp(code, "Busy") == 0 || strcmp(code, "ThawPending") == 0) ?
						 ERRCODE_OBJECT_IN_USE : ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("ami_snapshot helper failed during %s: %s", what, code),
				 errdetail("%s", message)));
	}
	if (msg->type != expected_type && expected_type != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unexpected %s message from ami_snapshot helper during %s",
						amsp_msg_name(msg->type), what)));
}

void
helper_send_abort(HelperConn *hc, const char *reason)
{
	unsigned char buf[AMSP_HEADER_LEN + 1100];
	char		r[1001];
	struct amsp_writer w;
	size_t		len;

	if (!hc || hc->sock == PGINVALID_SOCKET)
		return;
	strlcpy(r, reason, sizeof(r));
	amsp_begin(&w, buf, sizeof(buf), AMSP_ABORT);
	amsp_put_str(&w, AMSP_T_REASON, r);
	len = amsp_end(&w);
	if (len > 0)
		(void) send(hc->sock, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

void
helper_set_image_asked(HelperConn *hc, bool asked)
{
	hc->image_asked = asked;
}

void
helper_set_standby_asked(HelperConn *hc)
{
	hc->standby_asked = true;
}

void
helper_set_check_asked(HelperConn *hc)
{
	hc->check_asked = true;
}

void
helper_set_job_asked(HelperConn *hc)
{
	hc->job_asked = true;
}

void
helper_close(HelperConn *hc)
{
	if (hc && hc->sock != PGINVALID_SOCKET)
	{
		closesocket(hc->sock);
		hc->sock = PGINVALID_SOCKET;
		ReleaseExternalFD();
	}
}

const char *
helper_last_error_code(HelperConn *hc)
{
	return hc && hc->error_code[0] ? hc->error_code : NULL;
}

const struct amsp_msgview *
helper_last_error(HelperConn *hc)
{
	return hc && hc->have_error ? &hc->error : NULL;
}
