/* Loopback sockets for the C test programs' floods. */
#ifndef LOOPBACK_H
#define LOOPBACK_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* A UDP socket bound to 127.0.0.1 on a port of the kernel's choice, or exits. */
static inline int bound_socket(struct sockaddr_in *addr)
{
	socklen_t len = sizeof(*addr);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	inet_pton(AF_INET, "127.0.0.1", &addr->sin_addr);
	if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof(*addr)) != 0) {
		perror("socket/bind");
		exit(1);
	}
	getsockname(fd, (struct sockaddr *)addr, &len);
	return fd;
}

#endif /* LOOPBACK_H */
