#!/usr/bin/env bash
# Builds the container image of deploy/Containerfile with podman and checks
# what it holds: the static binary alone, as its entry point. (Running it
# needs a host that lets the engine set up a privileged container.)
# Usage: deploy/test-container.sh   (as root, from the repository root, after ./dev.sh static)
set -euo pipefail
shopt -s inherit_errexit
fail() { echo "test-container: $*" >&2; exit 1; }
# vfs: no overlay mounts needed; the image is one small layer.
podman=(podman --storage-driver vfs)
image=localhost/udptrace-test
"${podman[@]}" build -q -f deploy/Containerfile -t "$image" . >/dev/null
trap '"${podman[@]}" rmi -f "$image" >/dev/null 2>&1 || true' EXIT
entry=$("${podman[@]}" image inspect -f '{{json .Config.Entrypoint}}' "$image")
[ "$entry" = '["/udptrace"]' ] || fail "entry point $entry"
container=$("${podman[@]}" create "$image")
files=$("${podman[@]}" export "$container" | tar -t | grep -v '/$' | sort | xargs)
"${podman[@]}" rm "$container" >/dev/null
[ "$files" = udptrace ] || fail "the image holds '$files', not the binary alone"
echo "test-container: the image holds /udptrace alone"
