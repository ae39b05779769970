#!/usr/bin/env bash
# Runs udptrace's kernel test suites (udptrace/tests/socket_events.rs, senders.rs,
# packet_events.rs, payload.rs, limits.rs, sockets.rs and attribution.rs) inside pinned Debian kernels under QEMU (TCG:
# KVM guests hang on these hosts) once per backend, then, with the backend
# `auto` picks, those suites plus the CLI's (udptrace-cli/tests/cli.rs,
# startup.rs, views.rs and serve.rs, which runs on every backend too) and the C library's (udpevent/tests/foreign.rs, with its C
# programs built here); and
# the kernel suites on the host kernel; and the static binary (./dev.sh
# static) alone with busybox in each kernel. Prints kernel x backend -> result
# with test counts. A backend a kernel cannot run is reported unsupported, with why.
#
#   vm/matrix.sh            build, boot the kernels (at once, a core each), print the table
#
# Exits non-zero if any supported cell fails. Kernel packages are cached in
# target/vm/ between runs; a fresh machine downloads them with apt.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned kernels: package=version.
KERNELS=(
	"linux-image-6.1.0-50-cloud-amd64=6.1.176-1"
	"linux-image-6.12.117+deb12-cloud-amd64=6.12.117-1~deb12u1"
)
BACKENDS="fentry kprobe tracepoint"
# Rows per kernel: each backend, fentry's per-function fallback, and auto.
CELLS="$BACKENDS fallback auto"
WORK=target/vm
mkdir -p "$WORK"

cargo build --locked -q -p udptrace-cli -p udpevent
# The suites' test binaries, by name: the kernel suites run on every backend,
# the CLI's and the C library's with the backend auto picks.
SUITES="socket_events senders packet_events payload limits sockets attribution"
declare -A tests
test_binary() { # package, test
	cargo test --locked -q --no-run -p "$1" --test "$2" --message-format=json 2>/dev/null |
		python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])'
}
for suite in $SUITES; do
	tests[$suite]=$(test_binary udptrace "$suite")
done
tests[cli]=$(test_binary udptrace-cli cli)
tests[startup]=$(test_binary udptrace-cli startup)
tests[views]=$(test_binary udptrace-cli views)
tests[serve]=$(test_binary udptrace-cli serve)
tests[foreign]=$(test_binary udpevent foreign)
# The C library's test programs, built here: the guest has no compiler.
sh udpevent/tests/c/build.sh "$WORK/cbin" target/debug

# The initramfs: busybox, the test binary, the CLI (for the backend probe) and their libraries.
build_initramfs() {
	local root=$WORK/root out=$WORK/initrd.cpio.gz
	rm -rf "$root"
	mkdir -p "$root"/{bin,proc,sys,dev,tmp,etc}
	cp /bin/busybox "$root/bin/busybox"
	for suite in "${!tests[@]}"; do
		cp "${tests[$suite]}" "$root/bin/$suite"
	done
	cp target/debug/udptrace "$root/bin/udptrace"
	mkdir -p "$root/cbin" "$root/lib/udpevent"
	cp "$WORK"/cbin/* "$root/cbin/"
	cp target/debug/libudpEvent.so "$root/lib/udpevent/"
	local programs
	programs=$(ls "$WORK"/cbin/* | grep -v -- '-asan$')
	# shellcheck disable=SC2086
	for lib in $(ldd "${tests[@]}" target/debug/udptrace target/debug/libudpEvent.so $programs |
		awk '/=> \// { print $3 } /^\t\// { print $1 }' | sort -u); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
	cp vm/init "$root/init"
	chmod +x "$root/init"
	(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 >"$out"
	echo "$out"
}

kernel_image() {
	local pkg=${1%%=*} deb
	deb=$(ls "$WORK"/"${pkg}"_*.deb 2>/dev/null | head -1 || true)
	if [ -z "$deb" ]; then
		(cd "$WORK" && apt-get download -q "$1" >/dev/null 2>&1) || {
			echo "vm/matrix.sh: cannot download $1" >&2
			return 1
		}
		deb=$(ls "$WORK"/"${pkg}"_*.deb | head -1)
	fi
	rm -rf "$WORK/x-$pkg"
	dpkg -x "$deb" "$WORK/x-$pkg"
	ls "$WORK/x-$pkg"/boot/vmlinuz-*
}

# The kernel's initramfs: the suites' one, and the modules the suites need
# that this kernel builds as modules (veth, for the attribution suite's
# namespace pair), loaded by vm/init. The kernel unpacks concatenated archives.
kernel_initrd() { # package=version
	local pkg=${1%%=*} root=$WORK/modules-root out=$WORK/initrd-${1%%=*}.cpio.gz module
	rm -rf "$root"
	mkdir -p "$root/lib/modules"
	for module in veth; do
		module=$(find "$WORK/x-$pkg/lib/modules" -name "$module.ko*" | head -1)
		case $module in
		"") ;;
		*.xz) xz -dc "$module" >"$root/lib/modules/$(basename "$module" .xz)" ;;
		*) cp "$module" "$root/lib/modules/" ;;
		esac
	done
	{
		cat "$initrd"
		(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1
	} >"$out"
	echo "$out"
}

# The self-contained binary, in VMs of its own whose initramfs holds it and
# busybox and nothing else: no shared library to fall back on.
static_bin=$(./dev.sh static)
build_static_initramfs() {
	local root=$WORK/static-root out=$WORK/static.cpio.gz
	rm -rf "$root"
	mkdir -p "$root"/{bin,proc,sys,dev,tmp}
	cp /bin/busybox "$root/bin/busybox"
	cp "$static_bin" "$root/bin/udptrace"
	cp vm/static-init "$root/init"
	chmod +x "$root/init"
	(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 >"$out"
	echo "$out"
}

# The static binary's cell from its VM's log: doctor ran, and the DNS query
# busybox's nslookup sent (38 bytes to port 53) was traced.
static_cell() {
	local log=$1
	if ! ldd "$static_bin" 2>&1 | grep -q 'not a dynamic executable\|statically linked' ||
		! file "$static_bin" | grep -q 'static-pie linked\|statically linked'; then
		echo "FAIL ($static_bin is not statically linked)"
	elif ! grep -a -q '^DOCTOR 0' "$log"; then
		echo "FAIL (doctor failed: see $log)"
	elif ! grep -a '^EVENT ' "$log" | grep '"event":"send"' | grep '"comm":"nslookup"' |
		grep -q '"rport":53,"bytes":38,'; then
		echo "FAIL (the DNS query was not traced: see $log)"
	else
		echo "pass (alone with busybox: doctor, a traced DNS query)"
	fi
}

initrd=$(build_initramfs)
static_initrd=$(build_static_initramfs)
declare -a rows
failed=0

row() { # kernel, backend, result
	rows+=("$(printf '| %-28s | %-10s | %s |' "$1" "$2" "$3")")
}

# `udptrace doctor` must pick the first backend that passed, in auto's order.
doctor_row() { # kernel label, log
	local expected="" picked backend
	for backend in $BACKENDS; do
		if [[ $(cell "$2" "$backend") == pass* ]]; then
			expected=$backend
			break
		fi
	done
	picked=$(grep -a -o 'auto picks: *[a-z]*' "$2" | awk '{ print $3 }' | head -n 1)
	if [ -n "$picked" ] && [ "$picked" = "$expected" ]; then
		row "$1" doctor "pass (auto picks $picked)"
	else
		row "$1" doctor "FAIL (auto picks '${picked:-nothing}', expected '$expected')"
		failed=1
	fi
}

# One cell from a run's log: pass/fail with the test counts, or unsupported with why.
cell() {
	local log=$1 backend=$2 line
	if line=$(grep -a -m1 "^UNSUPPORTED $backend" "$log"); then
		echo "unsupported: ${line#UNSUPPORTED $backend }"
	elif line=$(grep -a -m1 "^RESULT $backend" "$log"); then
		local counts
		# The suites' summary lines between this backend's BEGIN and RESULT lines, added up.
		counts=$(sed -n "/^BEGIN $backend/,/^RESULT $backend/p" "$log" | grep -a "^test result" |
			awk '{ for (i = 1; i < NF; i++) { if ($(i + 1) ~ /^passed/) p += $i; if ($(i + 1) ~ /^failed/) f += $i } }
				END { printf "%d passed; %d failed", p, f }')
		if [ "${line#RESULT $backend }" = 0 ]; then echo "pass ($counts)"; else echo "FAIL ($counts)"; fi
	else
		echo "FAIL (no result: see $log)"
	fi
}

# Boots a kernel on an initramfs until its init powers off, or kills it after
# a time limit. One host thread runs both vCPUs: with a thread each, a vCPU
# executing udp_sendmsg while the other patches in its fentry trampoline once
# read a half-written call and the guest panicked (multi-threaded TCG and
# cross-modifying code).
boot() { # vmlinuz, initrd, MiB of memory, seconds allowed, log
	timeout "$4" qemu-system-x86_64 -accel tcg,thread=single -cpu max -m "$3" -smp 2 \
		-nographic -no-reboot \
		-kernel "$1" -initrd "$2" \
		-append "console=ttyS0 quiet panic=-1" 2>&1 | tr -d '\r' >"$5" || true
}

# Every kernel at once, each guest on a host core of its own: its suites,
# then the static binary alone.
boots=()
for spec in "${KERNELS[@]}"; do
	vmlinuz=$(kernel_image "$spec")
	kernel_initrd=$(kernel_initrd "$spec")
	{
		boot "$vmlinuz" "$kernel_initrd" 2048 3300 "$WORK/${spec%%=*}.log"
		boot "$vmlinuz" "$static_initrd" 1024 600 "$WORK/${spec%%=*}.static.log"
	} &
	boots+=($!)
done
wait "${boots[@]}"

for spec in "${KERNELS[@]}"; do
	log=$WORK/${spec%%=*}.log
	release=$(grep -a -m1 -o 'KERNEL [^ ]*' "$log" | cut -d' ' -f2 || echo "${spec%%=*}")
	for backend in $CELLS; do
		result=$(cell "$log" "$backend")
		[[ $result == FAIL* ]] && failed=1
		row "$release (${spec#*=})" "$backend" "$result"
	done
	doctor_row "$release (${spec#*=})" "$log"
	result=$(static_cell "$WORK/${spec%%=*}.static.log")
	[[ $result == FAIL* ]] && failed=1
	row "$release (${spec#*=})" static "$result"
done

# The host kernel runs the same suite natively.
host_log=$WORK/host.log
target/debug/udptrace doctor >"$host_log" 2>&1 || true
for backend in $BACKENDS; do
	if target/debug/udptrace --backend "$backend" -d 0.2 >/dev/null 2>"$WORK/host.err"; then
		rc=0
		echo "BEGIN $backend" >>"$host_log"
		for suite in $SUITES; do
			UDPTRACE_TEST_BACKEND=$backend "${tests[$suite]}" >>"$host_log" 2>&1 || rc=$?
		done
		echo "RESULT $backend $rc" >>"$host_log"
	else
		echo "UNSUPPORTED $backend $(tail -1 "$WORK/host.err" | sed 's/^udptrace: error: //')" >>"$host_log"
	fi
	result=$(cell "$host_log" "$backend")
	[[ $result == FAIL* ]] && failed=1
	row "$(uname -r) (host)" "$backend" "$result"
done
if [[ $(cell "$host_log" fentry) == pass* && $(cell "$host_log" tracepoint) == pass* ]]; then
	echo "BEGIN fallback" >>"$host_log"
	rc=0
	for suite in socket_events senders; do
		UDPTRACE_TEST_BACKEND=fentry UDPTRACE_TEST_MISSING=udpv6_sendmsg,udp_recvmsg,skb_consume_udp \
			"${tests[$suite]}" >>"$host_log" 2>&1 || rc=$?
	done
	echo "RESULT fallback $rc" >>"$host_log"
else
	echo "UNSUPPORTED fallback needs both the fentry backend and the length tracepoints" >>"$host_log"
fi
result=$(cell "$host_log" fallback)
[[ $result == FAIL* ]] && failed=1
row "$(uname -r) (host)" fallback "$result"

doctor_row "$(uname -r) (host)" "$host_log"

# A failing cell's log is not kept by CI: print what failed, and why, here.
if [ "$failed" != 0 ]; then
	for log in "$WORK"/*.log; do
		if grep -a -q -E "^test .* FAILED$|panicked at" "$log"; then
			echo "== failures in $log"
			grep -a -E -A 12 "^---- |panicked at|^test .* FAILED$" "$log" | head -n 200
		fi
	done
fi

echo
echo "| kernel                       | backend    | result |"
echo "| ---------------------------- | ---------- | ------ |"
printf '%s\n' "${rows[@]}"
exit $failed
