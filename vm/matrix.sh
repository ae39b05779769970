#!/usr/bin/env bash
# Runs udptrace's test suites inside Debian kernels under QEMU (TCG: KVM
# guests hang on these hosts): the oldest and the newest kernel run the
# kernel suites (udptrace/tests/socket_events.rs, senders.rs,
# packet_events.rs, payload.rs, limits.rs, sockets.rs, attribution.rs,
# latency.rs, and the CLI's serve.rs) once per backend, then the CLI's (cli.rs, startup.rs,
# views.rs) and the C library's (udpevent/tests/foreign.rs, with its C
# programs built here) with the backend `auto` picks; the kernels between
# them run every suite once, with `auto`. Then the kernel suites on the host
# kernel, and the static binary (./dev.sh static) alone with busybox in each
# kernel. Prints kernel x backend -> result with test counts. A backend a
# kernel cannot run is reported unsupported, with why.
#
#   vm/matrix.sh            build, boot the kernels (two at a time, a core each), print the table
#
# Exits non-zero if any supported cell fails. Kernel packages are cached in
# target/vm/ between runs; a fresh machine downloads them with apt, from
# private package lists for the suites other than the machine's own.
set -euo pipefail
cd "$(dirname "$0")/.."

# The kernels: Debian suite (`system`: the machine's own package lists),
# package=version, which cells run (`every`: each backend, fentry's
# per-function fallback and auto; `auto`: auto alone, every suite), the
# lane that boots it (the lanes run at once, a host core each), and the
# backends it must start (one that does not fails the run). Debian 11's
# 5.10 is the oldest; sid's newest cloud kernel, whichever it is when the
# matrix runs (its packages leave the archive when superseded), the newest.
KERNELS=(
	"bullseye linux-image-5.10.0-32-cloud-amd64-unsigned=5.10.223-1 every 1 fentry,kprobe"
	"system linux-image-6.1.0-50-cloud-amd64=6.1.176-1 auto 1 fentry,kprobe"
	"sid newest every 2 fentry,kprobe,tracepoint"
	"system linux-image-6.12.117+deb12-cloud-amd64=6.12.117-1~deb12u1 auto 2 fentry,kprobe,tracepoint"
)
BACKENDS="fentry kprobe tracepoint"
WORK=$PWD/target/vm
mkdir -p "$WORK"

cargo build --locked -q -p udptrace-cli -p udpevent
# The suites' test binaries, by name: the kernel suites run on every backend,
# the CLI's and the C library's with the backend auto picks.
SUITES="socket_events senders packet_events payload limits sockets attribution latency"
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
tests[start_under_load]=$(test_binary udptrace-cli start_under_load)
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

# apt-get and apt-cache on a Debian suite's own package lists, kept under
# target/vm/apt-SUITE, leaving the machine's sources alone.
apt_suite() { # suite, tool, args...
	local suite=$1 tool=$2 dir=$WORK/apt-$1
	shift 2
	if [ "$suite" = system ]; then
		"$tool" "$@"
		return
	fi
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
	echo "deb http://deb.debian.org/debian $suite main" >"$dir/sources.list"
	"$tool" -o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts=- \
		-o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" "$@"
}

# The package=version of the newest cloud kernel a suite has: its metapackage's dependency.
newest_kernel() { # suite
	apt_suite "$1" apt-get update -qq >/dev/null 2>&1 || return 1
	local image version
	image=$(apt_suite "$1" apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	[ -n "$image" ] || return 1
	version=$(apt_suite "$1" apt-cache show "$image" 2>/dev/null | awk '/^Version:/ { print $2; exit }')
	echo "$image=$version"
}

# Downloads (or finds in target/vm) a kernel package and the packages newer
# Debian kernels split it into (linux-binary-*, linux-modules-*), unpacks
# them into one tree and prints that tree's path.
kernel_tree() { # suite, package=version
	local suite=$1 pkg=${2%%=*} version=${2#*=} tree=$WORK/x-${2%%=*} deb dep
	local debs=("$pkg=$version")
	if [ "$suite" != system ]; then
		apt_suite "$suite" apt-get update -qq >/dev/null 2>&1 || true
	fi
	for dep in $(apt_suite "$suite" apt-cache show "$pkg=$version" 2>/dev/null |
		awk -F': ' '/^Depends:/ { print $2; exit }' | tr ',' '\n' |
		grep -o 'linux-\(binary\|modules\)-[^ ]*'); do
		debs+=("$dep=$version")
	done
	rm -rf "$tree"
	for deb in "${debs[@]}"; do
		local file
		file=$(ls "$WORK"/"${deb%%=*}_${deb#*=}"_*.deb 2>/dev/null | head -1 || true)
		if [ -z "$file" ]; then
			(cd "$WORK" && apt_suite "$suite" apt-get download -q "$deb" >/dev/null 2>&1) || {
				echo "vm/matrix.sh: cannot download $deb from Debian's $suite" >&2
				return 1
			}
			file=$(ls "$WORK"/"${deb%%=*}_${deb#*=}"_*.deb | head -1)
		fi
		dpkg -x "$file" "$tree"
	done
	echo "$tree"
}

# The kernel's initramfs: the suites' one, and the modules the suites need
# that this kernel builds as modules (veth, for the attribution suite's
# namespace pair), loaded by vm/init. The kernel unpacks concatenated archives.
kernel_initrd() { # kernel tree
	local tree=$1 root=$WORK/modules-$(basename "$1") out=$WORK/initrd-$(basename "$1").cpio.gz module
	rm -rf "$root"
	mkdir -p "$root/lib/modules"
	# veth for the attribution suite's namespace pair; UDP socket diagnostics
	# (before 5.12 they give existing sockets their cookies), in load order.
	for module in veth inet_diag udp_diag; do
		module=$(find "$tree" -path '*/lib/modules/*' -name "$module.ko*" | head -1)
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

# `udptrace doctor` must pick the first backend that starts in auto's order
# (every backend's cell, where one runs, must pass too).
doctor_row() { # kernel label, log
	local expected picked
	expected=$(grep -a -m1 '^STARTS ' "$2" | awk '{ print $2 }')
	picked=$(grep -a -o 'auto picks: *[a-z]*' "$2" | awk '{ print $3 }' | head -n 1)
	if [ -n "$picked" ] && [ "$picked" = "$expected" ]; then
		row "$1" doctor "pass (auto picks $picked)"
	else
		row "$1" doctor "FAIL (auto picks '${picked:-nothing}', expected '${expected:-nothing}')"
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
boot() { # vmlinuz, initrd, MiB of memory, seconds allowed, log, cells
	timeout "$4" qemu-system-x86_64 -accel tcg,thread=single -cpu max -m "$3" -smp 2 \
		-nographic -no-reboot \
		-kernel "$1" -initrd "$2" \
		-append "console=ttyS0 quiet panic=-1 udptrace.cells=${6:-none}" 2>&1 | tr -d '\r' >"$5" || true
}

# Each kernel's package and unpacked tree, before any boots: a kernel that
# cannot be fetched fails the run here, saying which.
declare -a specs trees names
for entry in "${KERNELS[@]}"; do
	read -r suite spec cells lane starts <<<"$entry"
	if [ -n "${UDPTRACE_MATRIX_SUITES:-}" ] && [[ ",$UDPTRACE_MATRIX_SUITES," != *",$suite,"* ]]; then
		continue
	fi
	if [ "$spec" = newest ]; then
		spec=$(newest_kernel "$suite") || {
			echo "vm/matrix.sh: cannot find the newest cloud kernel in Debian's $suite" >&2
			exit 1
		}
		echo "vm/matrix.sh: the newest kernel in Debian's $suite is $spec" >&2
	fi
	tree=$(kernel_tree "$suite" "$spec") || exit 1
	specs+=("$suite $spec $cells $lane $starts")
	trees+=("$tree")
	names+=("${spec%%=*}")
done

# A lane boots its kernels one after the other: each one's suites, then the
# static binary alone. The lanes run at once, a guest on each host core.
run_lane() { # lane
	local i suite spec cells lane starts vmlinuz
	for i in "${!specs[@]}"; do
		read -r suite spec cells lane starts <<<"${specs[$i]}"
		[ "$lane" = "$1" ] || continue
		vmlinuz=$(find "${trees[$i]}" -name 'vmlinuz*' -type f | head -1)
		boot "$vmlinuz" "$(kernel_initrd "${trees[$i]}")" 2048 3300 "$WORK/${names[$i]}.log" "$cells"
		boot "$vmlinuz" "$static_initrd" 1024 600 "$WORK/${names[$i]}.static.log"
	done
}
run_lane 1 &
lane1=$!
run_lane 2
wait $lane1

for i in "${!specs[@]}"; do
	read -r suite spec cells lane starts <<<"${specs[$i]}"
	log=$WORK/${names[$i]}.log
	release=$(grep -a -m1 -o 'KERNEL [^ ]*' "$log" | cut -d' ' -f2 || echo "${spec%%=*}")
	label="$release (${spec#*=})"
	case $cells in
	every) rows_of="$BACKENDS fallback auto" ;;
	*) rows_of=auto ;;
	esac
	for backend in $rows_of; do
		result=$(cell "$log" "$backend")
		# A backend this kernel has must start: a refusal there is a failure.
		if [[ $result == unsupported* && ",$starts," == *",$backend,"* ]]; then
			result="FAIL (must start here) ${result#unsupported}"
		fi
		[[ $result == FAIL* ]] && failed=1
		row "$label" "$backend" "$result"
	done
	# (On kernels of the auto column alone, where no cell says so.)
	for backend in ${starts//,/ }; do
		if [ "$cells" != every ] && ! grep -a -q "^STARTS $backend" "$log"; then
			row "$label" "$backend" "FAIL (did not start: see $log)"
			failed=1
		fi
	done
	doctor_row "$label" "$log"
	result=$(static_cell "$WORK/${names[$i]}.static.log")
	[[ $result == FAIL* ]] && failed=1
	row "$label" static "$result"
done

# The host kernel runs the same suite natively.
host_log=$WORK/host.log
target/debug/udptrace doctor >"$host_log" 2>&1 || true
for backend in $BACKENDS; do
	if target/debug/udptrace --backend "$backend" -d 0.2 >/dev/null 2>"$WORK/host.err"; then
		rc=0
		echo "STARTS $backend" >>"$host_log"
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
	for suite in socket_events senders latency; do
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
