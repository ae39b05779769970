/*
 * A consumer written against the original UDP Event API alone: it declares the
 * struct and the five functions itself, loads the library with dlopen() and
 * finds them with dlsym(), as existing consumers do. It sends known UDP
 * traffic and checks the events field by field. Usage: legacy_consumer LIB.so
 *
 * cc-flags: -ldl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "legacy_abi.h"


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

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int udp_socket(int family, const char *addr, uint16_t *port)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	int fd = socket(family, SOCK_DGRAM, 0);

	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		inet_pton(AF_INET, addr, &sin->sin_addr);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, addr, &sin6->sin6_addr);
		len = sizeof(*sin6);
	}
	if (fd < 0 || bind(fd, (struct sockaddr *)&ss, len) != 0) {
		perror("socket/bind");
		exit(1);
	}
	len = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &len);
	*port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					: ((struct sockaddr_in6 *)&ss)->sin6_port);
	return fd;
}

/* The next event of one of our ports; other traffic on the host is skipped. */
static struct udp_event_t next_of(uint16_t a, uint16_t b)
{
	for (;;) {
		struct udp_event_t ev = DequeuePerfEvent();
		if (ev.pid == (uint32_t)getpid() && (ev.SPT == a || ev.SPT == b))
			return ev;
	}
}

static void check_common(const struct udp_event_t *ev, uint16_t family, uint64_t t0)
{
	CHECK(ev->family == family, "family %u", ev->family);
	CHECK(ev->UserId == getuid(), "uid %u", ev->UserId);
	CHECK(strcmp(ev->task, "legacy-c") == 0, "task '%.16s'", ev->task);
	CHECK(ev->EventTime >= t0 && ev->EventTime <= now_ns(), "time %llu not after %llu",
	      (unsigned long long)ev->EventTime, (unsigned long long)t0);
	CHECK(memchr(ev->SADDR, 0, 64) && memchr(ev->DADDR, 0, 64), "addresses NUL-terminated");
}

int main(int argc, char **argv)
{
	const size_t sizes[3] = { 5, 6, 7 };
	char buf[64] = { 0 };
	uint16_t rport, sport, aport, bport;
	struct sockaddr_in dst = { .sin_family = AF_INET };
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	struct udp_event_t ev, zero;
	uint64_t t0, tx = 0, rx = 0;
	int i, rfd, sfd, a, b;

	if (argc != 2)
		return 2;
	prctl(PR_SET_NAME, "legacy-c");
	load_legacy_api(argv[1]);

	/* Everything below must finish well before this. */
	alarm(60);
	CHECK(getStatus() == 0, "status before AddProbe");
	memset(&zero, 0, sizeof(zero));
	ev = DequeuePerfEvent(); /* nothing running: a zeroed event, at once */
	CHECK(memcmp(&ev, &zero, sizeof(ev)) == 0, "zeroed event before AddProbe");
	AddProbe();
	AddProbe(); /* must not attach twice: every datagram below is seen once */
	for (i = 0; i < 1000 && !getStatus(); i++)
		usleep(10000);
	CHECK(getStatus() == 1, "status after attach");
	if (getStatus() != 1)
		return 1;
	/* Already set up: returns at once instead of attaching again. */
	CHECK(setupBPF() == 0, "setupBPF while running");

	/* IPv4, unconnected: sendto x3, recvfrom x3. */
	t0 = now_ns();
	rfd = udp_socket(AF_INET, "127.0.0.1", &rport);
	sfd = udp_socket(AF_INET, "127.0.0.1", &sport);
	dst.sin_port = htons(rport);
	inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
	for (i = 0; i < 3; i++)
		sendto(sfd, buf, sizes[i], 0, (struct sockaddr *)&dst, sizeof(dst));
	/* The sender is the peer of a receive, whether the reader asks for it or not. */
	recvfrom(rfd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fromlen);
	recv(rfd, buf, sizeof(buf), 0);
	CHECK(read(rfd, buf, sizeof(buf)) == sizes[2], "read");
	for (i = 0; i < 6; i++) {
		ev = next_of(sport, rport);
		check_common(&ev, AF_INET, t0);
		CHECK(strcmp(ev.SADDR, "127.0.0.1") == 0 && strcmp(ev.DADDR, "127.0.0.1") == 0,
		      "addresses %s %s", ev.SADDR, ev.DADDR);
		if (ev.SPT == sport) {
			tx += sizes[ev.txPkts - 1];
			CHECK(ev.DPT == rport, "send DPT %u", ev.DPT);
			CHECK(ev.tx_b == tx && ev.rx_b == 0 && ev.rxPkts == 0, "send counters %llu",
			      (unsigned long long)ev.tx_b);
		} else {
			rx += sizes[ev.rxPkts - 1];
			CHECK(ev.DPT == sport, "recv DPT %u", ev.DPT);
			CHECK(ev.rx_b == rx && ev.tx_b == 0 && ev.txPkts == 0, "recv counters %llu",
			      (unsigned long long)ev.rx_b);
		}
	}
	CHECK(tx == 18 && rx == 18, "saw %llu bytes sent, %llu received", (unsigned long long)tx,
	      (unsigned long long)rx);
	close(sfd);
	ev = next_of(sport, rport);
	CHECK(ev.SPT == sport && ev.tx_b == 18 && ev.txPkts == 3, "close of the sender");

	/* IPv6, connected both ways. */
	t0 = now_ns();
	a = udp_socket(AF_INET6, "::1", &aport);
	b = udp_socket(AF_INET6, "::1", &bport);
	{
		struct sockaddr_in6 to = { .sin6_family = AF_INET6, .sin6_port = htons(bport) };
		inet_pton(AF_INET6, "::1", &to.sin6_addr);
		CHECK(connect(a, (struct sockaddr *)&to, sizeof(to)) == 0, "connect");
	}
	send(a, "abcd", 4, 0);
	fromlen = sizeof(from);
	recvfrom(b, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fromlen);
	ev = next_of(aport, bport); /* connect */
	check_common(&ev, AF_INET6, t0);
	CHECK(ev.SPT == aport && ev.DPT == bport && ev.txPkts == 0, "connect event");
	CHECK(strcmp(ev.SADDR, "::1") == 0 && strcmp(ev.DADDR, "::1") == 0, "v6 text %s %s",
	      ev.SADDR, ev.DADDR);
	ev = next_of(aport, bport);
	CHECK(ev.SPT == aport && ev.tx_b == 4 && ev.txPkts == 1, "v6 send");
	ev = next_of(aport, bport);
	CHECK(ev.SPT == bport && ev.DPT == aport && ev.rx_b == 4 && ev.rxPkts == 1, "v6 recv");

	/* Out of order calls are defined. */
	cleanup();
	alarm(5); /* DequeuePerfEvent after cleanup must not hang */
	ev = DequeuePerfEvent();
	CHECK(memcmp(&ev, &zero, sizeof(ev)) == 0, "zeroed event after cleanup");
	CHECK(getStatus() == 0, "status after cleanup");
	cleanup(); /* a no-op */
	printf("%s\n", failures ? "FAILED" : "PASS");
	return failures ? 1 : 0;
}
