/*
 * client.c - see client.h.
 */
#include "client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int amsp_client_connect(const char *socket_path, struct amis_err *err)
{
	struct sockaddr_un sa;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return err_set(err, AMIS_E_HELPER_SOCKET, "socket path too long: %s", socket_path);
	memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		err_set(err, AMIS_E_HELPER_SOCKET, "cannot connect to the helper at %s: %s",
		        socket_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

int amsp_client_send(int fd, const unsigned char *frame, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, frame, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		frame += n;
		len -= (size_t)n;
	}
	return 0;
}

int amsp_client_recv(int fd, unsigned char *buf, size_t cap, int timeout_ms, struct amsp_msgview *m,
                     const char **why)
{
	long long deadline = mono_usec() + timeout_ms * 1000LL;
	size_t got = 0, want = AMSP_HEADER_LEN;

	while (got < want) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		long long left = (deadline - mono_usec()) / 1000;
		ssize_t n;
		int rc;

		if (left <= 0) {
			*why = "timeout";
			return -1;
		}
		rc = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			continue;
		n = recv(fd, buf + got, (want > cap ? cap : want) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			*why = "closed";
			return -1;
		}
		got += (size_t)n;
		if (got == AMSP_HEADER_LEN) {
			long plen = amsp_header_payload_len(buf, why);

			if (plen < 0)
				return -1;
			want = AMSP_HEADER_LEN + (size_t)plen;
			if (want > cap) {
				*why = "frame larger than the buffer";
				return -1;
			}
		}
	}
	return amsp_decode(buf, got, m, why);
}
