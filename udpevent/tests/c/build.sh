#!/bin/sh
# Builds every C test program the way udpevent/tests/foreign.rs runs them, so
# the tests can run where there is no C compiler (UDPEVENT_TEST_BIN_DIR=OUTDIR).
# Each program's link flags are on its "cc-flags:" line. Every program is also
# built with AddressSanitizer as NAME-asan.
#
# Usage: build.sh OUTDIR LIBDIR        (LIBDIR holds libudpEvent.so)
#        build.sh OUTDIR --pkg-config  (the installed header and library)
# The programs find libudpEvent.so beside themselves ($ORIGIN) or through
# LD_LIBRARY_PATH, which the tests set from UDPEVENT_TEST_LIB; built with
# --pkg-config, where the system's loader finds it.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 OUTDIR LIBDIR|--pkg-config" >&2; exit 2; }
out=$1
lib=$2
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}
include=$here/../../../include
# compile OUTPUT SOURCE [FLAG...]: against the tree's header and LIBDIR, or
# the installed ones.
compile() {
	o=$1 src=$2
	shift 2
	if [ "$lib" = --pkg-config ]; then
		# pkg-config's words: split on purpose.
		# shellcheck disable=SC2046
		"$cc" -std=gnu11 -Wall -Werror $(pkg-config --cflags udpevent) "$src" -o "$o" \
			$(pkg-config --libs udpevent) "$@"
	else
		"$cc" -std=gnu11 -Wall -Werror -I"$include" "$src" -o "$o" \
			-L"$lib" -Wl,-rpath,'$ORIGIN' "$@"
	fi
}
mkdir -p "$out"
for src in "$here"/*.c; do
	name=$(basename "$src" .c)
	flags=$(sed -n 's/^ \* cc-flags:\(.*\)$/\1/p' "$src")
	# $flags is a list of words: split on purpose.
	# shellcheck disable=SC2086
	compile "$out/$name" "$src" $flags
	# shellcheck disable=SC2086
	compile "$out/$name-asan" "$src" -g -fsanitize=address -fno-omit-frame-pointer $flags
done
