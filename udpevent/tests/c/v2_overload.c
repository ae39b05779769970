/*
 * A v2 consumer that stops reading during a flood: every datagram sent is
 * either delivered or counted lost, exactly. Usage: v2_overload N
 *
 * cc-flags: -ludpEvent
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "udpEvent.h"
#include "loopback.h"

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

int main(int argc, char **argv)
{
	struct sockaddr_in sink, source;
	udptrace_config cfg;
	udptrace_event ev;
	udptrace_stats st;
	udptrace_handle *h;
	long n, sent, delivered = 0;
	int rc, sink_fd, source_fd;

	if (argc != 2)
		return 2;
	n = atol(argv[1]);
	alarm(120);
	/* The sink never reads: the only events of the flood's port are its sends. */
	sink_fd = bound_socket(&sink);
	source_fd = bound_socket(&source);
	memset(&cfg, 0, sizeof(cfg));
	cfg.port = ntohs(source.sin_port);
	cfg.event_mask = 1 << UDPTRACE_SEND;
	h = udptrace_open(&cfg);
	if (!h) {
		fprintf(stderr, "FAIL: open: %s\n", udptrace_last_error());
		return 1;
	}

	sent = flood(source_fd, &sink, n); /* nobody calls udptrace_next meanwhile */
	udptrace_stop(h);
	while ((rc = udptrace_next(h, &ev, 10000)) == UDPTRACE_EVENT)
		delivered += ev.kind == UDPTRACE_SEND && ev.lport == ntohs(source.sin_port) &&
			     ev.pid == (uint32_t)getpid();
	if (rc != UDPTRACE_FINISHED) {
		fprintf(stderr, "FAIL: draining ended with %d\n", rc);
		return 1;
	}
	udptrace_get_stats(h, &st);
	udptrace_close(h);
	close(source_fd);
	close(sink_fd);

	printf("sent %ld delivered %ld lost %llu\n", sent, delivered, (unsigned long long)st.lost);
	if (delivered + (long)st.lost != sent || st.lost == 0 ||
	    st.events[UDPTRACE_SEND - 1] != (uint64_t)delivered) {
		fprintf(stderr, "FAIL: sent %ld != delivered %ld + lost %llu (stats: %llu sends)\n",
			sent, delivered, (unsigned long long)st.lost,
			(unsigned long long)st.events[UDPTRACE_SEND - 1]);
		return 1;
	}
	printf("PASS\n");
	return 0;
}
