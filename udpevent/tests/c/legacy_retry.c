/*
 * A failed attach must not leave the legacy API stuck: the first AddProbe
 * runs without the capabilities tracing needs (dropped from this thread's
 * effective set, which the library's thread inherits) and fails; with them
 * back, the next AddProbe must attach, so the usual `while (!getStatus())`
 * loop ends. Usage: legacy_retry LIB.so
 *
 * cc-flags: -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/capability.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "legacy_abi.h"

/* Turns the capabilities tracing needs off or on in this thread's effective set. */
static void set_tracing_caps(int on)
{
	const int caps[] = { CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF };
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];
	size_t i;

	if (syscall(SYS_capget, &hdr, data) != 0) {
		perror("capget");
		exit(1);
	}
	for (i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		uint32_t bit = 1u << (caps[i] % 32);
		if (on)
			data[caps[i] / 32].effective |= bit & data[caps[i] / 32].permitted;
		else
			data[caps[i] / 32].effective &= ~bit;
	}
	if (syscall(SYS_capset, &hdr, data) != 0) {
		perror("capset");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	struct udp_event_t ev, zero;
	int i;

	if (argc != 2)
		return 2;
	load_legacy_api(argv[1]);
	alarm(60);
	memset(&zero, 0, sizeof(zero));

	set_tracing_caps(0);
	AddProbe();
	ev = DequeuePerfEvent(); /* returns, zeroed, once attaching has failed */
	if (memcmp(&ev, &zero, sizeof(ev)) != 0 || getStatus() != 0) {
		fprintf(stderr, "FAIL: attached without the capabilities\n");
		return 1;
	}
	printf("first attach failed\n");

	set_tracing_caps(1);
	AddProbe();
	for (i = 0; i < 1000 && !getStatus(); i++)
		usleep(10000);
	if (getStatus() != 1) {
		fprintf(stderr, "FAIL: AddProbe after a failed attach did not attach\n");
		return 1;
	}
	cleanup();
	printf("PASS\n");
	return 0;
}
