#!/usr/bin/env bash
# Installs the Debian package on this machine, uses it as a user and a C
# developer would, and removes it: udptrace from PATH (serve answering a
# scrape), its man pages, completions and systemd unit, and the C library's
# test programs built against the installed header and library through
# pkg-config, run by the library's own suite.
# Usage: deploy/test-package.sh DEB   (as root, from the repository root)
set -euo pipefail
shopt -s inherit_errexit
[ $# -eq 1 ] || { echo "usage: $0 DEB" >&2; exit 2; }
deb=$1
fail() { echo "test-package: $*" >&2; exit 1; }

dpkg -i "$deb" >/dev/null
# Removed however the test ends; the end checks that removal is clean.
trap 'dpkg -r udptrace >/dev/null 2>&1 || true' EXIT
[ "$(command -v udptrace)" = /usr/bin/udptrace ] || fail "udptrace is not on PATH"
udptrace doctor >/dev/null || fail "udptrace doctor failed"
# Every subcommand, from PATH.
for run in "trace -d 0.3" "trace --packets -d 0.3" "drops -d 0.3" "count --by dport -d 0.3" \
	"top -b -d 0.3" "life -d 0.3" "rcvbuf -d 0.3" \
	"completions fish"; do
	# shellcheck disable=SC2086
	udptrace $run >/dev/null 2>&1 || fail "udptrace $run failed"
done
# serve, from PATH, on a port the kernel picks: it says which once it serves.
log=$(mktemp)
udptrace serve --listen 127.0.0.1:0 -d 3 >/dev/null 2>"$log" &
serve=$!
body=$(python3 - "$log" <<'PY'
import re, sys, time, urllib.request
for _ in range(300):
    found = re.search(r"on (http://127\.0\.0\.1:[0-9]+/metrics)", open(sys.argv[1]).read())
    if found:
        break
    time.sleep(0.1)
else:
    sys.exit("test-package: udptrace serve never said it serves")
print(urllib.request.urlopen(found.group(1), timeout=10).read().decode())
PY
) || { kill "$serve" 2>/dev/null || true; cat "$log" >&2; fail "no scrape of udptrace serve"; }
grep -q '^udptrace_build_info{' <<<"$body" ||
	{ kill "$serve" 2>/dev/null || true; fail "udptrace serve: no udptrace_build_info in /metrics"; }
wait "$serve" || { cat "$log" >&2; fail "udptrace serve -d 3 failed"; }
rm -f "$log"
MANPAGER=cat MANWIDTH=200 man udptrace-count | grep -q -- '--by' || fail "man udptrace-count"
MANPAGER=cat MANWIDTH=200 man udptrace | grep -q 'Trace every UDP send' || fail "man udptrace"
# shellcheck disable=SC2016
words=$(bash -c 'source /usr/share/bash-completion/completions/udptrace &&
	COMP_WORDS=(udptrace co) && COMP_CWORD=1 && _udptrace udptrace co udptrace &&
	echo "${COMPREPLY[*]}"')
[ "$words" = "count completions" ] || fail "bash completes 'udptrace co' as '$words'"
words=$(fish -c "complete -C 'udptrace co'" | cut -f1 | xargs)
[ "$words" = "completions count" ] || fail "fish completes 'udptrace co' as '$words'"
kind=$(zsh -c 'autoload -U compinit && compinit -u && autoload -Uz _udptrace && whence -w _udptrace')
[ "$kind" = "_udptrace: function" ] || fail "zsh finds no _udptrace: '$kind'"
libs=$(pkg-config --libs udpevent)
[ "${libs% }" = -ludpEvent ] || fail "pkg-config --libs udpevent says '$libs'"
# The unit: in the package, and sound to systemd where it is here to ask.
unit=/usr/lib/systemd/system/udptrace.service
grep -qx "$unit" <<<"$(dpkg -L udptrace)" || fail "the package has no $unit"
if command -v systemd-analyze >/dev/null; then
	systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
fi

bins=$(mktemp -d)
sh udpevent/tests/c/build.sh "$bins" --pkg-config
UDPEVENT_TEST_BIN_DIR=$bins UDPEVENT_TEST_LIB=/usr/lib/x86_64-linux-gnu/libudpEvent.so \
	cargo test --locked -q -p udpevent --test foreign -- --test-threads=1 ||
	fail "the C library's suite against the installed package"
rm -rf "$bins"

dpkg -r udptrace >/dev/null
for f in /usr/bin/udptrace /usr/lib/x86_64-linux-gnu/libudpEvent.so /usr/include/udpEvent.h \
	/usr/share/man/man1/udptrace.1.gz /usr/lib/systemd/system/udptrace.service; do
	[ ! -e "$f" ] || fail "$f is left after dpkg -r"
done
echo "test-package: installed, used and removed $deb"
