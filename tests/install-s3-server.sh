# Sourced by tests/run.sh (and so by .ci/run): installs s3s-fs 0.14.1, the S3-compatible
# server the S3 tests start on 127.0.0.1 (tests/common/s3.rs), when it is missing, and points
# the tests at it with S3S_FS_BIN. s3s-fs checks SigV4 signatures and keeps objects on disk;
# 0.14.1 is the last release that builds with Rust 1.95 (~2 min from source). It is installed
# into target/reference/ (cargo install --root), not onto the user's PATH.
s3s_fs_root="${S3S_FS_ROOT:-$PWD/target/reference/s3s-fs-0.14.1}"
s3s_fs_bin="$s3s_fs_root/bin/s3s-fs"
if ! "$s3s_fs_bin" --version 2>/dev/null | grep -q '0\.14\.1'; then
  # One already installed by the user (or an earlier setup) is used as it is.
  found="$(command -v s3s-fs 2>/dev/null || true)"
  if [ -n "$found" ] && "$found" --version 2>/dev/null | grep -q '0\.14\.1'; then
    s3s_fs_bin="$found"
  else
    echo "installing s3s-fs 0.14.1 into $s3s_fs_root (cargo install --root) for the S3 tests"
    cargo install s3s-fs@0.14.1 --features binary --locked --quiet --root "$s3s_fs_root"
  fi
  unset found
fi
S3S_FS_BIN="$s3s_fs_bin"
export S3S_FS_BIN
unset s3s_fs_bin s3s_fs_root
