/*
 * The v2 API from C, through the generated header and linked normally:
 * a filter, timeouts, event fields, stats, errors, where an event happened
 * (network namespace, cgroup path), stop and close.
 *
 * cc-flags: -ludpEvent
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "udpEvent.h"

static int failures;

#define CHECK(cond, ...)                                                 \
	do {                                                             \
		if (!(cond)) {                                           \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                    \
			fputc('\n', stderr);                             \
			failures++;                                      \
		}                                                        \
	} while (0)

static int bound(uint16_t *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	getsockname(fd, (struct sockaddr *)&sin, &len);
	*port = ntohs(sin.sin_port);
	return fd;
}

static void send_to(int fd, uint16_t port, size_t len)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port) };
	char buf[64] = { 0 };

	inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
	sendto(fd, buf, len, 0, (struct sockaddr *)&to, sizeof(to));
}

int main(void)
{
	const uint8_t loopback[4] = { 127, 0, 0, 1 };
	udptrace_config cfg;
	udptrace_event ev;
	udptrace_stats st;
	udptrace_handle *h;
	uint16_t rport, oport, sport, nport;
	struct timespec t0, t1;
	int rfd, ofd, sfd, nfd, rc, i;
	char buf[64];
	struct sockaddr_in from;
	socklen_t fromlen = sizeof(from);

	prctl(PR_SET_NAME, "v2-c");
	alarm(60);

	/* Invalid configuration: NULL and a one-line reason. */
	memset(&cfg, 0, sizeof(cfg));
	cfg.family = 5;
	CHECK(udptrace_open(&cfg) == NULL, "family 5 accepted");
	CHECK(strstr(udptrace_last_error(), "family") != NULL, "error '%s'", udptrace_last_error());
	cfg.family = 0;
	cfg.addr = "not-an-address";
	CHECK(udptrace_open(&cfg) == NULL, "bad addr accepted");
	CHECK(strstr(udptrace_last_error(), "not-an-address") != NULL, "error '%s'",
	      udptrace_last_error());
	CHECK(udptrace_next(NULL, &ev, 0) == UDPTRACE_EINVAL, "NULL handle");

	rfd = bound(&rport);
	ofd = bound(&oport);
	sfd = bound(&sport);
	memset(&cfg, 0, sizeof(cfg));
	cfg.port = rport;
	cfg.event_mask = (1 << UDPTRACE_SEND) | (1 << UDPTRACE_RECV);
	h = udptrace_open(&cfg);
	CHECK(h != NULL, "open: %s", udptrace_last_error());
	if (!h)
		return 1;
	/* What was attached depends on the kernel: the test compares it with the library's. */
	printf("backend %s\n", udptrace_backend(h));
	for (i = 0; udptrace_probe(h, i) != NULL; i++)
		printf("probe %s\n", udptrace_probe(h, i));
	CHECK(i > 0, "no probes listed");
	CHECK(udptrace_probe(NULL, 0) == NULL, "probe of a NULL handle");

	/* Nothing matches yet: the timeout is honoured. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = udptrace_next(h, &ev, 200);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK(rc == UDPTRACE_TIMEOUT, "rc %d", rc);
	CHECK((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 >= 190,
	      "returned early");

	send_to(sfd, oport, 9); /* another port: filtered out in the kernel */
	send_to(sfd, rport, 10);
	send_to(sfd, rport, 20);
	recvfrom(rfd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fromlen);
	recvfrom(ofd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fromlen);

	for (i = 0; i < 3; i++) {
		rc = udptrace_next(h, &ev, 2000);
		CHECK(rc == UDPTRACE_EVENT, "event %d: rc %d", i, rc);
		CHECK(ev.rport != oport && ev.lport != oport, "filtered port leaked");
		CHECK(ev.pid == (uint32_t)getpid() && ev.tid == (uint32_t)gettid(), "pid/tid");
		CHECK(strcmp(ev.comm, "v2-c") == 0, "comm %s", ev.comm);
		CHECK(ev.family == 4 && memcmp(ev.laddr, loopback, 4) == 0 &&
			      memcmp(ev.raddr, loopback, 4) == 0,
		      "addresses");
		CHECK(ev.sock != 0 && ev.cgroup != 0 && ev.ts_ns != 0, "ids");
		if (i < 2) {
			CHECK(ev.kind == UDPTRACE_SEND && ev.lport == sport && ev.rport == rport,
			      "send %d: kind %u %u->%u", i, ev.kind, ev.lport, ev.rport);
			CHECK(ev.ret == (i ? 20 : 10), "send bytes %d", ev.ret);
			/* The 9-byte send to the other port still counts on the socket. */
			CHECK(ev.tx_bytes == (i ? 39u : 19u) && ev.tx_packets == (i ? 3u : 2u),
			      "tx counters %llu", (unsigned long long)ev.tx_bytes);
		} else {
			CHECK(ev.kind == UDPTRACE_RECV && ev.lport == rport && ev.rport == sport,
			      "recv: kind %u", ev.kind);
			CHECK(ev.ret == 10 && ev.rx_bytes == 10 && ev.rx_packets == 1, "recv bytes");
		}
	}
	/* A receive that does not ask for the sender: the port filter matches its sender. */
	nfd = bound(&nport);
	send_to(rfd, nport, 7);
	CHECK(recv(nfd, buf, sizeof(buf), 0) == 7, "recv");
	for (i = 0; i < 2; i++) {
		rc = udptrace_next(h, &ev, 2000);
		CHECK(rc == UDPTRACE_EVENT, "event %d: rc %d", i, rc);
		CHECK(ev.kind == (i ? UDPTRACE_RECV : UDPTRACE_SEND) && ev.ret == 7, "kind %u",
		      ev.kind);
		CHECK(ev.lport == (i ? nport : rport) && ev.rport == (i ? rport : nport),
		      "%u->%u", ev.lport, ev.rport);
	}
	CHECK(udptrace_recv_sender_unknown(h) == 0, "receives of unknown sender");
	CHECK(udptrace_get_stats(h, &st) == 0, "stats");
	CHECK(st.events[UDPTRACE_SEND - 1] == 3 && st.events[UDPTRACE_RECV - 1] == 2,
	      "stats events %llu %llu", (unsigned long long)st.events[0],
	      (unsigned long long)st.events[1]);
	CHECK(st.lost == 0, "lost %llu", (unsigned long long)st.lost);

	/* Where an event happened: this process's network namespace and cgroup. */
	{
		udptrace_event_ex ex;
		struct stat ns;
		char path[4096], want[4096] = "", line[4096];
		FILE *f = fopen("/proc/self/cgroup", "r");
		int64_t n;

		while (f && fgets(line, sizeof(line), f))
			if (strncmp(line, "0::", 3) == 0)
				snprintf(want, sizeof(want), "%.*s", (int)strcspn(line + 3, "\n"), line + 3);
		if (f)
			fclose(f);
		send_to(sfd, rport, 5);
		rc = udptrace_next_ex(h, &ex, sizeof(ex), 2000);
		CHECK(rc == UDPTRACE_EVENT && ex.event.kind == UDPTRACE_SEND && ex.event.ret == 5,
		      "next_ex: rc %d kind %u", rc, ex.event.kind);
		CHECK(stat("/proc/self/ns/net", &ns) == 0 && ex.netns == (uint32_t)ns.st_ino,
		      "netns %u", ex.netns);
		CHECK(ex.container_id[0] == 0 || strlen(ex.container_id) == 64, "container %s",
		      ex.container_id);
		n = udptrace_cgroup_path(h, ex.event.cgroup, path, sizeof(path));
		CHECK(want[0] && n == (int64_t)strlen(want) && strcmp(path, want) == 0,
		      "cgroup path '%s', /proc/self/cgroup says '%s'", path, want);
		CHECK(udptrace_cgroup_path(h, ex.event.cgroup, NULL, 0) == n, "length alone");
		CHECK(udptrace_cgroup_path(h, 0, path, sizeof(path)) == -1, "cgroup 0");
		CHECK(udptrace_next_ex(h, &ex, 8, 0) == UDPTRACE_EINVAL, "size below an event");
	}

	udptrace_stop(h);
	rc = udptrace_next(h, &ev, 2000);
	CHECK(rc == UDPTRACE_FINISHED, "after stop: rc %d", rc);
	udptrace_close(h);
	udptrace_close(NULL);
	printf("%s\n", failures ? "FAILED" : "PASS");
	return failures ? 1 : 0;
}
