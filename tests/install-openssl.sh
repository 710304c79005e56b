# Sourced by tests/run.sh and .ci/run: the S3 client links the system OpenSSL (libssl-dev and
# pkg-config to build; the .deb depends on libssl3), which keeps the binary small and lets the
# distribution patch TLS.
if ! pkg-config --exists openssl 2>/dev/null; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing libssl-dev and pkg-config (build dependencies)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config >/dev/null
  else
    echo "warning: OpenSSL development files not found; install libssl-dev and pkg-config" >&2
  fi
fi
