#!/usr/bin/env bash
# udptrace developer entry point, for a fresh Debian machine, as root.
#
#   ./dev.sh run [ARGS...]   build udptrace (release) and run it: ./dev.sh run --port 53
#   ./dev.sh test            the whole test suite: formatting, lints, unit and
#                            integration tests against the running kernel
#   ./dev.sh bench [--full]  the benchmark (quick mode by default)
#   ./dev.sh static          build the self-contained binary (glibc, libbpf,
#                            libelf and zlib linked in) and print its path
#   ./dev.sh package         build the Debian package and print its path
#
# Each installs what it needs first: building needs clang, llvm, libelf,
# zlib, pkg-config and gcc (Rust's linker; rustfmt comes with Rust); the tests
# also use python3, man, zsh, fish, dig, dnsmasq, dnsperf, bpftrace, tcpdump,
# tshark, Prometheus, ngtcp2's QUIC client, openssl, curl, qemu, busybox, cpio, file and podman, and aioquic from
# PyPI (into python3's site-packages); the benchmark, bpftrace and tcpdump;
# the package, dpkg-dev.
set -euo pipefail
shopt -s inherit_errexit # a failed build inside $(...) fails the command
cd "$(dirname "$0")"

BUILD_PACKAGES=(clang llvm libelf-dev zlib1g-dev pkg-config gcc libc6-dev)
TEST_PACKAGES=(util-linux file python3 man-db zsh fish podman dnsmasq-base bind9-dnsutils dnsperf bpftrace tcpdump qemu-system-x86 busybox-static cpio xz-utils tmux prometheus tshark ngtcp2-client openssl curl)
TEST_PYTHON_PACKAGES=(aioquic==1.7.2)
BENCH_PACKAGES=(bpftrace tcpdump)
PACKAGE_PACKAGES=(dpkg-dev)

# Installs the Debian packages named that are missing, and checks for Rust.
install_deps() {
	local missing=()
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$pkg")
	done
	if ((${#missing[@]})); then
		echo "dev.sh: installing ${missing[*]}" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
	command -v cargo >/dev/null || {
		echo "dev.sh: cargo not found: install Rust (https://rustup.rs)" >&2
		exit 1
	}
	command -v rustfmt >/dev/null || {
		echo "dev.sh: rustfmt not found: the build formats the generated BPF skeleton with it (rustup component add rustfmt)" >&2
		exit 1
	}
}

# The self-contained x86_64 binary: static glibc (libc6-dev's libc.a, no
# other toolchain needed), with libbpf, libelf and zlib linked in.
build_static() {
	local target=x86_64-unknown-linux-gnu
	LIBBPF_SYS_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build --release --locked -p udptrace-cli --features static --target $target >&2
	echo "target/$target/release/udptrace"
}

# The Debian package (deploy/package.sh), around the static binary.
build_package() {
	local bin
	bin=$(build_static)
	bash deploy/package.sh "$bin"
}

require_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "dev.sh: $1 needs root (it loads BPF programs into the kernel)" >&2
		exit 1
	fi
}

cmd=${1:-}
shift || true
case "$cmd" in
run)
	require_root "run"
	install_deps "${BUILD_PACKAGES[@]}"
	cargo build --release --locked -p udptrace-cli
	exec ./target/release/udptrace "$@"
	;;
test)
	require_root "test"
	install_deps "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}" "${PACKAGE_PACKAGES[@]}"
	# The QUIC peers of udptrace-cli/tests/quic.rs.
	python3 -m pip install --quiet --root-user-action=ignore "${TEST_PYTHON_PACKAGES[@]}"
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	# cargo test builds only the rlib of a library; the C and Python tests load libudpEvent.so.
	cargo build --locked --workspace
	cargo test --locked --workspace
	# The kernel suite again, inside pinned Debian kernels under QEMU.
	bash vm/matrix.sh
	# The Debian package, installed, used and removed; the container image, built.
	deb=$(build_package)
	bash deploy/test-package.sh "$deb"
	bash deploy/test-container.sh
	# The benchmark's quick mode, as a smoke test: it ran, and lost nothing.
	# (Its serve scenario runs the CLI binary built beside it.)
	cargo build --release --locked -p udptrace-cli
	cargo run --release --locked -p udptrace-bench -- --quick --check
	;;
static)
	install_deps "${BUILD_PACKAGES[@]}"
	build_static
	;;
package)
	install_deps "${BUILD_PACKAGES[@]}" "${PACKAGE_PACKAGES[@]}"
	build_package
	;;
bench)
	require_root "bench"
	install_deps "${BUILD_PACKAGES[@]}" "${BENCH_PACKAGES[@]}"
	cargo build --release --locked -p udptrace-cli
	cargo run --release --locked -p udptrace-bench -- "$@"
	;;
*)
	# The comment at the top, without its markers.
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
	exit 2
	;;
esac
