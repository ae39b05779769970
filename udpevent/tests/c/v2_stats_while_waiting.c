/*
 * udptrace_get_stats must not wait for a consumer: one thread blocks in
 * udptrace_next(h, .., -1) on a filter nothing matches, another asks for the
 * stats and must have them at once.
 *
 * cc-flags: -ludpEvent -pthread
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "udpEvent.h"

static udptrace_handle *h;

static void *wait_forever(void *rc)
{
	udptrace_event ev;

	*(int *)rc = udptrace_next(h, &ev, -1);
	return NULL;
}

static void on_alarm(int sig)
{
	static const char msg[] = "FAIL: udptrace_get_stats still waiting after 5 s\n";

	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(1);
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1e3 + (t1.tv_nsec - t0->tv_nsec) / 1e6;
}

int main(void)
{
	udptrace_config cfg;
	udptrace_stats st;
	struct timespec t0;
	pthread_t waiter;
	int next_rc = -100, rc;
	double took;

	/* A hang is the failure this test is about: end it with a message. */
	signal(SIGALRM, on_alarm);
	alarm(30); /* opening loads the programs: slow in an emulated guest */
	memset(&cfg, 0, sizeof(cfg));
	cfg.port = 9; /* discard: nothing on this host sends to it during the test */
	cfg.event_mask = 1 << UDPTRACE_CLOSE;
	cfg.comm = "no-such-thread"; /* and nothing with this name closes a socket */
	h = udptrace_open(&cfg);
	if (!h) {
		fprintf(stderr, "FAIL: open: %s\n", udptrace_last_error());
		return 1;
	}
	alarm(5);
	pthread_create(&waiter, NULL, wait_forever, &next_rc);
	usleep(300 * 1000); /* let it block */

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = udptrace_get_stats(h, &st);
	took = ms_since(&t0);
	if (rc != 0 || took > 1000) {
		fprintf(stderr, "FAIL: udptrace_get_stats returned %d after %.0f ms\n", rc, took);
		return 1;
	}
	udptrace_stop(h);
	pthread_join(waiter, NULL);
	if (next_rc != UDPTRACE_FINISHED) {
		fprintf(stderr, "FAIL: the waiting udptrace_next returned %d\n", next_rc);
		return 1;
	}
	udptrace_close(h);
	printf("PASS stats in %.0f ms\n", took);
	return 0;
}
