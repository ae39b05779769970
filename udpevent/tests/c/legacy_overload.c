/*
 * A legacy consumer that stalls while a child floods one port, first stopped
 * (SIGSTOP, all its threads), then running but not dequeuing, then drains:
 * every datagram the child sent is either dequeued or counted by
 * GetLostEvents(), exactly. The legacy API cannot filter, so
 * other UDP traffic on the host during the flood can be lost too: the child
 * checks /proc/net/snmp and the run is inconclusive (exit 3) if there was any.
 * Usage: legacy_overload LIB.so N
 *
 * cc-flags: -ldl -pthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "legacy_abi.h"
#include "loopback.h"

static uint64_t (*GetLostEvents)(void);

static pid_t sender;
static uint16_t flood_port;
static atomic_long delivered;

/* UDP datagrams in and out of this network namespace so far, IPv4 and IPv6. */
static void udp_totals(unsigned long long *in, unsigned long long *out)
{
	char line[1024];
	unsigned long long v4[4] = { 0 }, v6;
	FILE *f = fopen("/proc/net/snmp", "r");

	*in = *out = 0;
	/* "Udp: InDatagrams NoPorts InErrors OutDatagrams ..." then the values. */
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Udp: ", 5) != 0)
			continue;
		if (line[5] == 'I')
			continue; /* the names */
		sscanf(line + 5, "%llu %llu %llu %llu", &v4[0], &v4[1], &v4[2], &v4[3]);
		*in += v4[0];
		*out += v4[3];
	}
	if (f)
		fclose(f);
	f = fopen("/proc/net/snmp6", "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Udp6InDatagrams %llu", &v6) == 1)
			*in += v6;
		if (sscanf(line, "Udp6OutDatagrams %llu", &v6) == 1)
			*out += v6;
	}
	if (f)
		fclose(f);
}

static int is_stopped(pid_t pid)
{
	char path[64], stat[512], *state;
	FILE *f;
	int stopped = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f && fgets(stat, sizeof(stat), f) && (state = strrchr(stat, ')')))
		stopped = state[2] == 'T';
	if (f)
		fclose(f);
	return stopped;
}

/* Sends n datagrams; returns how many the kernel took. */
static long flood(int fd, const struct sockaddr_in *to, long n)
{
	char payload[64] = { 0 };
	long sent = 0;

	for (long i = 0; i < n; i++)
		sent += sendto(fd, payload, sizeof(payload), 0, (const struct sockaddr *)to,
			       sizeof(*to)) == sizeof(payload);
	return sent;
}

/*
 * The child: sends half the datagrams with its parent stopped (the kernel's
 * ring buffers overflow), the other half with it running but not dequeuing
 * (the library's queue overflows), and reports how many the kernel took and
 * how much other UDP traffic the namespace saw meanwhile.
 */
static void flood_while_parent_stalls(int report_fd, int fd, const struct sockaddr_in *to, long n)
{
	pid_t parent = getppid();
	unsigned long long in0, out0, in1, out1;
	char report[64];
	long sent;
	int i;

	kill(parent, SIGSTOP);
	for (i = 0; i < 200 && !is_stopped(parent); i++)
		usleep(10000);
	udp_totals(&in0, &out0);
	sent = flood(fd, to, n / 2);
	kill(parent, SIGCONT);
	sent += flood(fd, to, n - n / 2);
	udp_totals(&in1, &out1);
	snprintf(report, sizeof(report), "%ld %lld\n", sent,
		 (long long)(in1 - in0) + (long long)(out1 - out0) - sent);
	(void)!write(report_fd, report, strlen(report));
	_exit(0);
}

static void *count_flood_events(void *unused)
{
	(void)unused;
	for (;;) {
		struct udp_event_t ev = DequeuePerfEvent();
		if (ev.family == 0) /* zeroed: cleanup() ended tracing */
			return NULL;
		if (ev.pid == (uint32_t)sender && ev.SPT == flood_port)
			atomic_fetch_add(&delivered, 1);
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in sink, source;
	char report[64] = { 0 };
	long n, sent = 0, foreign = 0, seen;
	unsigned long long lost, lost_after;
	int i, sink_fd, source_fd, pipe_fd[2];
	pthread_t counter;
	void *lib;

	if (argc != 3)
		return 2;
	n = atol(argv[2]);
	lib = load_legacy_api(argv[1]);
	GetLostEvents = must_sym(lib, "GetLostEvents");
	alarm(120);

	AddProbe();
	for (i = 0; i < 1000 && !getStatus(); i++)
		usleep(10000);
	if (!getStatus()) {
		fprintf(stderr, "FAIL: never attached\n");
		return 1;
	}
	/* The sink never reads: the flood's only events are its sends. */
	sink_fd = bound_socket(&sink);
	source_fd = bound_socket(&source);
	flood_port = ntohs(source.sin_port);
	if (pipe(pipe_fd) != 0)
		return 1;
	sender = fork();
	if (sender == 0)
		flood_while_parent_stalls(pipe_fd[1], source_fd, &sink, n);
	/* Stopped, then not dequeuing, until the child is done. */
	if (read(pipe_fd[0], report, sizeof(report) - 1) <= 0 ||
	    sscanf(report, "%ld %ld", &sent, &foreign) != 2) {
		fprintf(stderr, "FAIL: no report from the sender\n");
		return 1;
	}
	waitpid(sender, NULL, 0);

	pthread_create(&counter, NULL, count_flood_events, NULL);
	for (i = 0; i < 600 && atomic_load(&delivered) + (long)GetLostEvents() < sent; i++)
		usleep(50000);
	usleep(500000); /* anything more would be counted twice */
	seen = atomic_load(&delivered);
	lost = GetLostEvents();
	cleanup();
	pthread_join(counter, NULL);
	lost_after = GetLostEvents();
	close(source_fd);
	close(sink_fd);

	printf("sent %ld delivered %ld lost %llu (after cleanup %llu) foreign %ld\n", sent, seen,
	       lost, lost_after, foreign);
	if (seen + (long)lost != sent && foreign != 0) {
		printf("INCONCLUSIVE: other UDP traffic during the flood\n");
		return 3;
	}
	if (seen + (long)lost != sent || lost == 0 || lost_after != lost) {
		fprintf(stderr, "FAIL: sent %ld != delivered %ld + lost %llu\n", sent, seen, lost);
		return 1;
	}
	printf("PASS\n");
	return 0;
}
