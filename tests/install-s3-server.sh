# Sourced by tests/run.sh (and so by .ci/run): installs s3s-fs 0.14.1, the S3-compatible
# server the S3 tests start on 127.0.0.1 (tests/common/s3.rs), when it is missing, and points
# the tests at it with S3S_FS_BIN. s3s-fs checks SigV4 signatures and keeps objects on disk;
# 0.14.1 is the last release that builds with Rust 1.95 (~2 min from source).
s3s_fs_bin="$(command -v s3s-fs 2>/dev/null || true)"
if [ -z "$s3s_fs_bin" ] && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  s3s_fs_bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
fi
if [ -z "$s3s_fs_bin" ] || ! "$s3s_fs_bin" --version 2>/dev/null | grep -q '0\.14\.1'; then
  echo "installing s3s-fs 0.14.1 (cargo install s3s-fs@0.14.1 --features binary --locked) for the S3 tests"
  cargo install s3s-fs@0.14.1 --features binary --locked --quiet
  s3s_fs_bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
fi
S3S_FS_BIN="$s3s_fs_bin"
export S3S_FS_BIN
unset s3s_fs_bin
