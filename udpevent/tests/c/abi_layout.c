/*
 * Prints the size and every field offset of the legacy struct as the seed
 * declares it, and checks at compile time that the generated header agrees.
 *
 * cc-flags:
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "udpEvent.h"

#pragma pack(push, 1)
struct seed_udp_event_t {
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

#define FIELDS(X) X(family) X(pid) X(UserId) X(EventTime) X(SPT) X(DPT) X(task) \
	X(rx_b) X(tx_b) X(rxPkts) X(txPkts) X(SADDR) X(DADDR)

#define SAME(f) _Static_assert(offsetof(struct seed_udp_event_t, f) == offsetof(udp_event_t, f), #f);
FIELDS(SAME)
_Static_assert(sizeof(struct seed_udp_event_t) == sizeof(udp_event_t), "size");

int main(void)
{
	printf("size %zu\n", sizeof(struct seed_udp_event_t));
#define PRINT(f) printf(#f " %zu\n", offsetof(struct seed_udp_event_t, f));
	FIELDS(PRINT)
	return 0;
}
