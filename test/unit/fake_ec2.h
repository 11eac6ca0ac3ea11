/*
 * fake_ec2.h - starts test/unit/ec2_fake_server.py for a C unit test (the
 * EC2 client's, the restore command's): start_server() fills endpoint;
 * last_request() asks it what the previous request sent.
 *
 * The server is a child process reading our stdin pipe: it exits when we do,
 * however we die.
 */
#ifndef AMIS_FAKE_EC2_H
#define AMIS_FAKE_EC2_H

#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ec2.h"
#include "xml.h"

#define PYTHON "/usr/bin/python3"
#define TOKEN "FwoGZXIvYXdzEXAMPLE//////////+token/with=odd+chars=="

static pid_t server_pid = -1;
static int server_stdin = -1;
static char endpoint[64];

static void stop_server(void)
{
	if (server_pid <= 0)
		return;
	close(server_stdin); /* the server exits on EOF */
	kill(server_pid, SIGTERM);
	waitpid(server_pid, NULL, 0);
	server_pid = -1;
}

static void bail(const char *why)
{
	printf("Bail out! %s\n", why);
	fflush(stdout);
	stop_server();
	exit(255);
}

static int find_script(char *out, size_t outsz)
{
	char exe[PATH_MAX], src[PATH_MAX];
	const char *dirs[4];
	size_t i, n = 0;
	ssize_t len;

	dirs[n++] = getenv("AMIS_UNIT_TEST_DIR");
	len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (len > 0) {
		exe[len] = '\0';
		dirs[n++] = dirname(exe);
	}
	snprintf(src, sizeof(src), "%s", __FILE__);
	dirs[n++] = dirname(src);
	dirs[n++] = "test/unit";
	for (i = 0; i < n; i++) {
		if (!dirs[i])
			continue;
		snprintf(out, outsz, "%s/ec2_fake_server.py", dirs[i]);
		if (access(out, R_OK) == 0)
			return 0;
	}
	return -1;
}

static void start_server(void)
{
	char script[PATH_MAX + 32], line[64];
	int to_child[2], from_child[2];
	struct pollfd pfd;
	size_t got = 0;
	int port;

	if (find_script(script, sizeof(script)) < 0)
		bail("ec2_fake_server.py not found (set AMIS_UNIT_TEST_DIR)");
	if (access(PYTHON, X_OK) < 0)
		bail(PYTHON " is missing");
	if (pipe(to_child) < 0 || pipe(from_child) < 0)
		bail("pipe failed");
	server_pid = fork();
	if (server_pid < 0)
		bail("fork failed");
	if (server_pid == 0) {
		dup2(to_child[0], STDIN_FILENO);
		dup2(from_child[1], STDOUT_FILENO);
		close(to_child[0]);
		close(to_child[1]);
		close(from_child[0]);
		close(from_child[1]);
		execl(PYTHON, PYTHON, script, (char *)NULL);
		_exit(127);
	}
	close(to_child[0]);
	close(from_child[1]);
	server_stdin = to_child[1];
	atexit(stop_server);

	/* "PORT <n>\n" within 20 s. */
	pfd = (struct pollfd){.fd = from_child[0], .events = POLLIN};
	while (got < sizeof(line) - 1 && !memchr(line, '\n', got)) {
		ssize_t r;

		if (poll(&pfd, 1, 20000) <= 0)
			bail("fake EC2 server did not start");
		r = read(from_child[0], line + got, sizeof(line) - 1 - got);
		if (r <= 0)
			bail("fake EC2 server exited (is python3-botocore installed?)");
		got += (size_t)r;
		line[got] = '\0';
	}
	close(from_child[0]);
	if (sscanf(line, "PORT %d", &port) != 1)
		bail("fake EC2 server said something unexpected");
	snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", port);
	printf("# fake EC2 at %s\n", endpoint);
}

/* The form pairs of the previous request, as "name=value\n" lines. */
static char *last_request(struct ec2_client *c, const struct aws_credentials *creds)
{
	struct ec2_params p;
	struct amis_err err;
	struct strbuf sb;
	xmlDocPtr doc = NULL;
	xmlNodePtr it;
	char *last;

	sb_init(&sb);
	ec2_params_init(&p);
	if (ec2_call(c, creds, "LastRequest", &p, 5000, 0, &doc, &err) == 0) {
		for (it = xml_items_first(xml_root(doc), "pairSet"); it; it = xml_items_next(it)) {
			char *k = xml_text_dup(xml_child(it, "name"));
			char *v = xml_text_dup(xml_child(it, "value"));

			sb_appendf(&sb, "%s=%s\n", k, v);
			free(k);
			free(v);
		}
	} else {
		sb_appendf(&sb, "LastRequest failed: %s: %s", err.code, err.msg);
	}
	xml_free(doc);
	ec2_params_free(&p);
	last = xstrdup(sb_str(&sb));
	sb_free(&sb);
	return last;
}

#endif
