#!/usr/bin/env bash
# Builds the Debian package, target/deb/udptrace_VERSION_amd64.deb, with
# dpkg-deb, and prints its path. It holds:
#   /usr/bin/udptrace                     the static binary (./dev.sh static)
#   /usr/lib/x86_64-linux-gnu/            libudpEvent.so.VERSION, and the
#                                         libudpEvent.so its SONAME names
#   /usr/include/udpEvent.h
#   /usr/lib/x86_64-linux-gnu/pkgconfig/udpevent.pc
#   /usr/share/man/man1/                  udptrace.1, udptrace-SUBCOMMAND.1
#   bash, zsh and fish completions
#   /usr/lib/systemd/system/udptrace.service
#                                         `udptrace serve` as a service, installed
#                                         but neither enabled nor started
# Usage: deploy/package.sh STATIC_BINARY   (run from the repository root)
set -euo pipefail
shopt -s inherit_errexit
[ $# -eq 1 ] || { echo "usage: $0 STATIC_BINARY" >&2; exit 2; }
bin=$1
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=amd64
multiarch=x86_64-linux-gnu
cargo build --release --locked -p udpevent >&2

stage=target/deb/udptrace_${version}_$arch
rm -rf "$stage"
lib=$stage/usr/lib/$multiarch
install -D -m 0755 "$bin" "$stage/usr/bin/udptrace"
install -D -m 0644 target/release/libudpEvent.so "$lib/libudpEvent.so.$version"
# The SONAME is libudpEvent.so, the name the legacy library was loaded by.
ln -s "libudpEvent.so.$version" "$lib/libudpEvent.so"
install -D -m 0644 include/udpEvent.h "$stage/usr/include/udpEvent.h"
install -D -m 0644 deploy/udptrace.service "$stage/usr/lib/systemd/system/udptrace.service"
mkdir -p "$lib/pkgconfig"
cat >"$lib/pkgconfig/udpevent.pc" <<PC
prefix=/usr
libdir=\${prefix}/lib/$multiarch
includedir=\${prefix}/include

Name: udpevent
Description: libudpEvent: the legacy UDP Event API and the udptrace_* v2 C API over udptrace
Version: $version
Libs: -L\${libdir} -ludpEvent
Cflags: -I\${includedir}
PC
man=$stage/usr/share/man/man1
"$bin" man-pages "$man" >/dev/null
gzip -9n "$man"/*.1
install -d "$stage/usr/share/bash-completion/completions" \
	"$stage/usr/share/zsh/vendor-completions" "$stage/usr/share/fish/vendor_completions.d"
"$bin" completions bash >"$stage/usr/share/bash-completion/completions/udptrace"
"$bin" completions zsh >"$stage/usr/share/zsh/vendor-completions/_udptrace"
"$bin" completions fish >"$stage/usr/share/fish/vendor_completions.d/udptrace.fish"
install -D -m 0644 /dev/stdin "$stage/usr/share/doc/udptrace/copyright" <<'COPY'
udptrace: system-wide UDP tracing for Linux, with eBPF.
License: GPL-2.0-only (see /usr/share/common-licenses/GPL-2).
COPY

# What the C library links (the binary is static), as Debian computes it.
shlibs=$(mktemp -d)
mkdir "$shlibs/debian"
printf 'Source: udptrace\n\nPackage: udptrace\nArchitecture: any\n' >"$shlibs/debian/control"
# (It warns that the library is not in its package's directory yet: it is not.)
substvars=$(cd "$shlibs" && dpkg-shlibdeps -O "$OLDPWD/$lib/libudpEvent.so.$version" 2>/dev/null) ||
	{ echo "package.sh: dpkg-shlibdeps failed (is dpkg-dev installed?)" >&2; exit 1; }
rm -rf "$shlibs"
depends=$(sed -n 's/^shlibs:Depends=//p' <<<"$substvars")
[ -n "$depends" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

mkdir -p "$stage/DEBIAN"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: udptrace
Version: $version
Architecture: $arch
Maintainer: udptrace developers <udptrace@users.noreply.github.com>
Depends: $depends
Section: net
Priority: optional
Homepage: https://github.com/udptrace/udptrace
Installed-Size: $(du -sk "$stage/usr" | cut -f1)
Description: system-wide UDP tracing with eBPF
 udptrace sees every UDP send, receive, connect, close and drop on the
 machine and attributes each to a process and socket. The udptrace binary
 is self-contained; libudpEvent (with udpEvent.h and a pkg-config file) is
 the C API, for which the package depends on libelf and zlib.
CONTROL
# The library in the system directory: refresh the loader's cache.
echo "activate-noawait ldconfig" >"$stage/DEBIAN/triggers"
deb=target/deb/udptrace_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
