/*
 * What a legacy consumer declares itself, as the original UDP Event API's
 * users do: the seed's packed event struct and the five functions, found
 * with dlopen()/dlsym(). Shared by the C test programs written against the
 * original API alone.
 */
#ifndef LEGACY_ABI_H
#define LEGACY_ABI_H

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#pragma pack(push, 1)
struct udp_event_t {
	uint16_t family;
	uint32_t pid;
	uint32_t UserId;
	uint64_t EventTime;
	uint16_t SPT;
	uint16_t DPT;
	char task[16];
	uint64_t rx_b, tx_b;
	uint32_t rxPkts, txPkts;
	char SADDR[64];
	char DADDR[64];
};
#pragma pack(pop)

static inline void *must_sym(void *lib, const char *name)
{
	void *p = dlsym(lib, name);

	if (!p) {
		fprintf(stderr, "FAIL: dlsym(%s): %s\n", name, dlerror());
		exit(1);
	}
	return p;
}

static void (*AddProbe)(void);
static int (*setupBPF)(void);
static int (*getStatus)(void);
static struct udp_event_t (*DequeuePerfEvent)(void);
static void (*cleanup)(void);

/* Loads the library and its five functions, or exits; returns it for more. */
static inline void *load_legacy_api(const char *path)
{
	void *lib = dlopen(path, RTLD_NOW);

	if (!lib) {
		fprintf(stderr, "FAIL: dlopen: %s\n", dlerror());
		exit(1);
	}
	AddProbe = must_sym(lib, "AddProbe");
	setupBPF = must_sym(lib, "setupBPF");
	getStatus = must_sym(lib, "getStatus");
	DequeuePerfEvent = must_sym(lib, "DequeuePerfEvent");
	cleanup = must_sym(lib, "cleanup");
	return lib;
}

#endif /* LEGACY_ABI_H */
