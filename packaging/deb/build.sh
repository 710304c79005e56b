#!/usr/bin/env bash
# Builds the Debian package: target/debian/litestream_<version>_<arch>.deb.
#
#   packaging/deb/build.sh [--binary PATH] [--out DIR] [--compress xz|gzip|none]
#
# Without --binary it runs `cargo build --release --locked` (honouring CARGO_TARGET_DIR) and
# packages target/release/litestream. It stages the package root in <out>/root, then runs
# `dpkg-deb --build --root-owner-group`, so no root privileges or fakeroot are needed.
#
#   --binary PATH   package this binary instead of building one (tests use the debug build)
#   --out DIR       where the root and the .deb go (default: ${CARGO_TARGET_DIR:-target}/debian)
#   --compress C    dpkg-deb compression (default: xz, which every dpkg reads)
#
# Environment: DEB_MAINTAINER (the Maintainer field and the changelog's signature, "Name
# <address>"; set it for a package you distribute), DEB_ARCH (default: dpkg
# --print-architecture), SOURCE_DATE_EPOCH (file times; default: the last commit's time).
#
# Without DEB_MAINTAINER the maintainer is the placeholder "litestream packagers
# <litestream@localhost>", which marks the package as a local build, and the package's lintian
# overrides (packaging/deb/lintian-overrides, each with its reason) gain one for that address.
# The top entry of packaging/deb/changelog must be for the version being built.
# Needs: cargo, dpkg-deb, gzip; dpkg-shlibdeps (dpkg-dev) for exact library dependencies,
# else they are read from the binary with objdump. Prints the path of the .deb.
set -euo pipefail
umask 022

repo="$(cd "$(dirname "$0")/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
out="$target_dir/debian"
binary=""
compress="xz"

while [ $# -gt 0 ]; do
	case "$1" in
	--binary) binary="$2"; shift 2 ;;
	--out) out="$2"; shift 2 ;;
	--compress) compress="$2"; shift 2 ;;
	-h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 1 ;;
	esac
done

# The [package] version of Cargo.toml; a pre-release (0.2.0-rc.1) sorts before the release in
# Debian only as 0.2.0~rc.1.
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)"
[ -n "$version" ] || { echo "build.sh: no version in $repo/Cargo.toml" >&2; exit 1; }
deb_version="${version/-/\~}"
arch="${DEB_ARCH:-$(dpkg --print-architecture)}"
placeholder_maintainer="litestream packagers <litestream@localhost>"
maintainer="${DEB_MAINTAINER:-$placeholder_maintainer}"
changelog_version="$(sed -n '1s/^litestream (\([^)]*\)).*/\1/p' "$repo/packaging/deb/changelog")"
if [ "$changelog_version" != "$deb_version" ]; then
	echo "build.sh: the top entry of packaging/deb/changelog is for ${changelog_version:-no version}, not $deb_version: add an entry for $deb_version" >&2
	exit 1
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH="$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)"
fi
export SOURCE_DATE_EPOCH

if [ -z "$binary" ]; then
	echo "build.sh: cargo build --release --locked" >&2
	(cd "$repo" && cargo build --release --locked >&2)
	binary="$target_dir/release/litestream"
fi
[ -x "$binary" ] || { echo "build.sh: not an executable: $binary" >&2; exit 1; }

root="$out/root"
rm -rf "$root"
mkdir -p "$out"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/etc/default" \
	"$root/lib/systemd/system" "$root/usr/share/man/man1" "$root/usr/share/man/man5" \
	"$root/usr/share/doc/litestream" "$root/usr/share/lintian/overrides"

# The release profile keeps the symbol table (strip = "debuginfo") so that CPU profiles from
# /debug/pprof/profile name functions; keep it.
install -m 0755 "$binary" "$root/usr/bin/litestream"
install -m 0644 "$repo/packaging/litestream.yml" "$root/etc/litestream.yml"
install -m 0600 "$repo/packaging/litestream.default" "$root/etc/default/litestream"
install -m 0644 "$repo/packaging/litestream.service" "$root/lib/systemd/system/litestream.service"
gzip -9n <"$repo/man/litestream.1" >"$root/usr/share/man/man1/litestream.1.gz"
gzip -9n <"$repo/man/litestream.yml.5" >"$root/usr/share/man/man5/litestream.yml.5.gz"
chmod 0644 "$root/usr/share/man/man1/litestream.1.gz" "$root/usr/share/man/man5/litestream.yml.5.gz"
install -m 0644 "$repo/packaging/deb/copyright" "$root/usr/share/doc/litestream/copyright"
# A native package's changelog: changelog.gz, compressed with gzip -9n (no name, no time).
sed -e "s|@MAINTAINER@|$maintainer|" "$repo/packaging/deb/changelog" |
	gzip -9n >"$root/usr/share/doc/litestream/changelog.gz"
chmod 0644 "$root/usr/share/doc/litestream/changelog.gz"
overrides="$root/usr/share/lintian/overrides/litestream"
install -m 0644 "$repo/packaging/deb/lintian-overrides" "$overrides"
if [ "$maintainer" = "$placeholder_maintainer" ]; then
	cat >>"$overrides" <<-'EOF'

		# Built without DEB_MAINTAINER (packaging/deb/build.sh): the placeholder address marks a
		# local build that nobody distributes. A package you publish names its maintainer.
		litestream: bogus-mail-host Maintainer litestream@localhost
		litestream: bogus-mail-host-in-debian-changelog litestream@localhost *
	EOF
fi

# Shared-library dependencies of the binary.
depends=""
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
	scratch="$(mktemp -d)"
	mkdir "$scratch/debian"
	printf 'Source: litestream\n\nPackage: litestream\nArchitecture: any\n' >"$scratch/debian/control"
	depends="$(cd "$scratch" && dpkg-shlibdeps -O "$root/usr/bin/litestream" 2>/dev/null |
		sed -n 's/^shlibs:Depends=//p')" || depends=""
	rm -rf "$scratch"
fi
if [ -z "$depends" ]; then
	glibc="$(objdump -T "$root/usr/bin/litestream" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)"
	depends="libc6${glibc:+ (>= $glibc)}"
	if objdump -p "$root/usr/bin/litestream" | grep -q 'NEEDED.*libgcc_s'; then
		depends="$depends, libgcc-s1"
	fi
	if objdump -p "$root/usr/bin/litestream" | grep -q 'NEEDED.*libssl.so.3'; then
		depends="$depends, libssl3"
	fi
fi

installed_size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s|@VERSION@|$deb_version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@INSTALLED_SIZE@|$installed_size|" -e "s|@DEPENDS@|$depends|" \
	"$repo/packaging/deb/control.in" >"$root/DEBIAN/control"
install -m 0644 "$repo/packaging/deb/conffiles" "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
	install -m 0755 "$repo/packaging/deb/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z |
	xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb="$out/litestream_${deb_version}_${arch}.deb"
dpkg-deb --build --root-owner-group "-Z$compress" "$root" "$deb" >&2
echo "$deb"
