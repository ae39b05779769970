#!/usr/bin/env bash
# Runs the container image of deploy/Containerfile for real, with podman:
#
# 1. the image holds the static binary alone, as its entry point;
# 2. `udptrace serve --by container_id,dport` from it, privileged, in the
#    host's cgroup namespace, counts a workload container (an image built
#    from scratch around a small static program that sends N datagrams to
#    its own loopback and reads them) exactly, under the workload's podman id;
# 3. `udptrace trace --container <short id>` on the host keeps exactly that
#    container's events while an identical container, and the host, send
#    the same datagrams to the same port.
#
# Containers run in a private mount namespace whose /sys/fs/cgroup is the
# cgroup v2 hierarchy: podman refuses a hybrid layout (v1 controllers at
# /sys/fs/cgroup, v2 at /sys/fs/cgroup/unified). Its cgroupfs manager puts
# each container in /libpod_parent/libpod-<id>, needing no systemd.
#
# Usage: deploy/test-container.sh   (as root, from the repository root, after ./dev.sh static)
set -euo pipefail
shopt -s inherit_errexit
fail() {
	echo "test-container: $*" >&2
	exit 1
}
[ "$(id -u)" -eq 0 ] || fail "needs root"

if [ -z "${UDPTRACE_TEST_CONTAINER_NS:-}" ]; then
	UDPTRACE_TEST_CONTAINER_NS=1 exec unshare --mount --propagation private -- "$BASH" "$0" "$@"
fi
if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]; then
	umount -l /sys/fs/cgroup
	mount -t cgroup2 none /sys/fs/cgroup
fi

bin=target/x86_64-unknown-linux-gnu/release/udptrace
[ -x "$bin" ] || fail "no $bin: run ./dev.sh static first"

# vfs: no overlay mounts needed; the images are one small layer each.
podman=(timeout 120 podman --storage-driver vfs --cgroup-manager=cgroupfs)
# What podman may set up on hosts that refuse its defaults: a cgroup v2 tree
# without the pids controller (hybrid hosts), hard limits below podman's
# default rlimits for a root without CAP_SYS_RESOURCE, and crun failing to
# set RLIMIT_MEMLOCK in unprivileged containers there. The workload's
# privileges change nothing it is tested for.
run=(run -d --privileged --pids-limit=-1 --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
image=localhost/udptrace-test-$$
workload_image=localhost/udptrace-test-workload-$$
n=100
# Below the ephemeral ports, so that no client's port is in the way.
port=$((20000 + $$ % 10000))
metrics=127.0.0.1:$((10000 + $$ % 10000))
tmp=$(mktemp -d)
containers=()
trace_pid=
# Podman's cgroups before the test: it leaves those of containers it failed
# to start behind.
parent=/sys/fs/cgroup/libpod_parent
parent_existed=$([ -d $parent ] && echo yes || echo no)
cgroups_before=$(ls -d $parent/libpod-* 2>/dev/null || true)

cleanup() {
	[ -z "$trace_pid" ] || kill "$trace_pid" 2>/dev/null || true
	((${#containers[@]} == 0)) || "${podman[@]}" rm -f -i -t 0 "${containers[@]}" >/dev/null 2>&1 || true
	"${podman[@]}" rmi -f "$image" "$workload_image" >/dev/null 2>&1 || true
	local dir dirs=("/sys/fs/cgroup/udptrace-test-host-$$")
	for dir in $parent/libpod-*; do
		grep -qxF "$dir" <<<"$cgroups_before" || dirs+=("$dir")
	done
	# Every conmon's cgroup: ours if the parent is.
	[ "$parent_existed" = yes ] || dirs+=($parent/conmon $parent)
	remove_cgroups "${dirs[@]}"
	rm -rf "$tmp"
}
trap cleanup EXIT

# rmdir each cgroup that exists, giving exiting processes a moment to go.
remove_cgroups() {
	local dir tries
	for dir in "$@"; do
		for tries in 1 2 3 4 5 6 7 8 9 10; do
			[ -d "$dir" ] || break
			rmdir "$dir" 2>/dev/null && break
			sleep 0.2
		done
		[ ! -d "$dir" ] || echo "test-container: could not remove the cgroup $dir" >&2
	done
}

check_image() {
	"${podman[@]}" build -q -f deploy/Containerfile -t "$image" . >/dev/null
	local entry container files
	entry=$("${podman[@]}" image inspect -f '{{json .Config.Entrypoint}}' "$image")
	[ "$entry" = '["/udptrace"]' ] || fail "entry point $entry"
	container=$("${podman[@]}" create "$image")
	containers+=("$container")
	files=$("${podman[@]}" export "$container" | tar -t | grep -v '/$' | sort | xargs)
	"${podman[@]}" rm "$container" >/dev/null
	[ "$files" = udptrace ] || fail "the image holds '$files', not the binary alone"
	echo "test-container: the image holds /udptrace alone"
}

# udp-burst N PORT [wait]: sends N datagrams to 127.0.0.1:PORT and reads each
# on a socket bound there. With `wait`, it does so once SIGUSR1 comes, then
# prints `sent` and exits at the next SIGUSR1: its cgroup outlives the
# datagrams until the checks are done (serve and trace name a cgroup once
# they read its counts and events, and podman removes it as it exits).
build_workload() {
	cat >"$tmp/udp-burst.c" <<'EOF'
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

static void go(int sig) { (void)sig; }

/* Blocked before the handler is set (a container's pid 1 ignores signals it
   has none for): a signal sent once the handler shows in /proc/PID/status
   waits for sigsuspend. */
static void wait_for_usr1(void) {
	sigset_t usr1, before;
	struct sigaction sa;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &before);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = go;
	sigaction(SIGUSR1, &sa, NULL);
	sigdelset(&before, SIGUSR1);
	sigsuspend(&before);
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: udp-burst N PORT [wait]\n");
		return 2;
	}
	int n = atoi(argv[1]), wait = argc > 3;
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2])),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (wait)
		wait_for_usr1();
	int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
	struct timeval limit = {.tv_sec = 5};
	setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
	if (bind(rx, (struct sockaddr *)&to, sizeof to)) {
		perror("udp-burst: bind");
		return 1;
	}
	char buf[16];
	for (int i = 0; i < n; i++) {
		if (sendto(tx, "udptrace", 8, 0, (struct sockaddr *)&to, sizeof to) != 8 ||
		    recv(rx, buf, sizeof buf, 0) != 8) {
			perror("udp-burst");
			return 1;
		}
	}
	if (wait) {
		printf("sent\n");
		fflush(stdout);
		wait_for_usr1();
	}
	return 0;
}
EOF
	gcc -static -O2 -Wall -Werror -o "$tmp/udp-burst" "$tmp/udp-burst.c"
	printf 'FROM scratch\nCOPY udp-burst /udp-burst\nENTRYPOINT ["/udp-burst"]\n' >"$tmp/Containerfile"
	"${podman[@]}" build -q -f "$tmp/Containerfile" -t "$workload_image" "$tmp" >/dev/null
}

# Starts a workload container, in a network namespace of its own, waiting
# for SIGUSR1; its full id in the variable named $1.
start_workload() {
	local id
	id=$("${podman[@]}" "${run[@]}" --network none "$workload_image" "$n" "$port" wait)
	containers+=("$id")
	printf -v "$1" %s "$id"
}

# Waits until the container's process has its SIGUSR1 handler.
wait_ready() {
	local id=$1 pid mask tries
	for tries in $(seq 100); do
		pid=$("${podman[@]}" inspect -f '{{.State.Pid}}' "$id")
		mask=$(awk '/^SigCgt:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
		# SIGUSR1 is signal 10: bit 9.
		[ -n "$mask" ] && (((0x$mask >> 9) & 1)) && return 0
		sleep 0.1
	done
	fail "container $id never got ready: $("${podman[@]}" logs "$id" 2>&1)"
}

# Has the workload containers send their datagrams, and waits until they
# did (the Nth run of a container prints its Nth `sent`).
send_from() {
	local runs=$1 id tries
	shift
	"${podman[@]}" kill --signal USR1 "$@" >/dev/null
	for id in "$@"; do
		for tries in $(seq 100); do
			(($("${podman[@]}" logs "$id" 2>&1 | grep -c '^sent$') >= runs)) && continue 2
			[ "$("${podman[@]}" inspect -f '{{.State.Running}}' "$id")" = true ] || break
			sleep 0.1
		done
		fail "workload $id did not send: $("${podman[@]}" logs "$id" 2>&1)"
	done
}

# Lets the workload containers exit, and checks they did with 0.
finish() {
	local id code
	"${podman[@]}" kill --signal USR1 "$@" >/dev/null
	for id in "$@"; do
		code=$("${podman[@]}" wait "$id")
		[ "$code" = 0 ] || fail "workload $id exited with $code: $("${podman[@]}" logs "$id" 2>&1)"
	done
}

# The workload on the host, in a cgroup of its own that names no container.
run_on_host() {
	local cgroup=/sys/fs/cgroup/udptrace-test-host-$$
	mkdir -p "$cgroup"
	(
		echo "$BASHPID" >"$cgroup/cgroup.procs"
		exec timeout 30 "$tmp/udp-burst" "$n" "$port"
	) || fail "the workload on the host failed"
}

start_serve() {
	local id tries
	id=$("${podman[@]}" "${run[@]}" --cgroupns=host --network host "$image" \
		serve --listen "$metrics" --by container_id,dport --port "$port")
	containers+=("$id")
	for tries in $(seq 150); do
		curl -sf --max-time 2 "http://$metrics/metrics" >/dev/null && return 0
		[ "$("${podman[@]}" inspect -f '{{.State.Running}}' "$id")" = true ] ||
			fail "serve exited: $("${podman[@]}" logs "$id" 2>&1)"
		sleep 0.2
	done
	fail "serve never answered on $metrics: $("${podman[@]}" logs "$id" 2>&1)"
}

# The datagram series of the test's port, sorted.
scrape() {
	curl -sf --max-time 10 "http://$metrics/metrics" |
		{ grep "^udptrace_datagrams_total{.*dport=\"$port\"" || true; } | sort
}

# Expected series: one send and one recv per "container_id count".
series() {
	local id count direction
	while [ $# -gt 0 ]; do
		id=$1 count=$2
		shift 2
		for direction in recv send; do
			echo "udptrace_datagrams_total{direction=\"$direction\",container_id=\"$id\",dport=\"$port\"} $count"
		done
	done | sort
}

expect_series() {
	local got want
	got=$(scrape) || fail "scraping $metrics failed"
	want=$(series "$@")
	[ "$got" = "$want" ] || fail "$(printf 'serve counted\n%s\nnot\n%s' "$got" "$want")"
}

check_serve() {
	local a=$1
	send_from 1 "$a"
	expect_series "$a" "$n"
	finish "$a"
	echo "test-container: serve in a container counted the $n sends and receives of container ${a:0:12} under its id"
}

# trace --container on the host, while the same workload runs in the
# container, in a second one and on the host.
check_trace_container() {
	local a=$1 b=$2 cgroup_a tries
	cgroup_a=$(sed -n 's/^0:://p' "/proc/$("${podman[@]}" inspect -f '{{.State.Pid}}' "$a")/cgroup")
	timeout 60 "$bin" trace --json -e send,recv --container "${a:0:12}" --port "$port" \
		>"$tmp/trace.json" 2>"$tmp/trace.err" &
	trace_pid=$!
	for tries in $(seq 300); do
		grep -q '^Tracing UDP' "$tmp/trace.err" && break
		kill -0 "$trace_pid" 2>/dev/null || fail "trace exited: $(cat "$tmp/trace.err")"
		sleep 0.1
	done
	grep -q '^Tracing UDP' "$tmp/trace.err" || fail "trace never started: $(cat "$tmp/trace.err")"
	send_from 2 "$a" &
	local workload_a=$!
	send_from 1 "$b" &
	local workload_b=$!
	run_on_host
	wait "$workload_a" && wait "$workload_b" || fail "the workload containers failed"
	kill "$trace_pid"
	wait "$trace_pid" || fail "trace failed: $(cat "$tmp/trace.err")"
	trace_pid=
	local events sends recvs in_a in_cgroup
	events=$(wc -l <"$tmp/trace.json")
	sends=$(grep -c '"event":"send"' "$tmp/trace.json" || true)
	recvs=$(grep -c '"event":"recv"' "$tmp/trace.json" || true)
	in_a=$(grep -cF "\"container_id\":\"$a\"" "$tmp/trace.json" || true)
	in_cgroup=$(grep -cF "\"cgroup_path\":\"$cgroup_a\"" "$tmp/trace.json" || true)
	[ "$events" -eq $((2 * n)) ] && [ "$sends" -eq "$n" ] && [ "$recvs" -eq "$n" ] &&
		[ "$in_a" -eq "$events" ] && [ "$in_cgroup" -eq "$events" ] ||
		fail "trace --container ${a:0:12} printed $events events ($sends sends, $recvs receives; $in_a labelled with its id, $in_cgroup in $cgroup_a), not $n sends and $n receives of that container alone"
	# Meanwhile serve saw all three: container a twice, b, and the host.
	expect_series "$a" $((2 * n)) "$b" "$n" "" "$n"
	finish "$a" "$b"
	echo "test-container: trace --container ${a:0:12} kept the $((2 * n)) events of that container alone (in $cgroup_a), beside container ${b:0:12} and the host"
}

start=$SECONDS
check_image
build_workload
start_serve
start_workload a
wait_ready "$a"
[ "$("${podman[@]}" inspect -f '{{.Id}}' "$a")" = "$a" ] || fail "podman's id of $a differs"
check_serve "$a"
"${podman[@]}" start "$a" >/dev/null
start_workload b
wait_ready "$a"
wait_ready "$b"
check_trace_container "$a" "$b"
echo "test-container: passed in $((SECONDS - start)) s"
