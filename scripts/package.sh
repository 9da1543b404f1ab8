#!/usr/bin/env bash
# Builds the shipped artefacts and the packages:
#   bash scripts/package.sh [--profile release|dev|package-test] [--arch x86_64,aarch64]
#                           [--out DIR] [--install-root DIR] [--no-packages]
#
# 1. `ossc` and libossc_preload.so with cargo-zigbuild against glibc 2.17
#    (target <arch>-unknown-linux-gnu.2.17; the host's architecture unless --arch says more),
#    so the library loads into any application image with glibc >= 2.17 (CentOS 7 and newer).
# 2. Fails if either artefact needs a glibc symbol version above 2.17 (objdump -T).
# 3. Lays out the install tree (deploy/package/README.md):
#      /usr/local/bin/ossc, /usr/local/lib/libossc_preload.so,
#      /etc/oss-connector/config.json (conffile), /usr/lib/systemd/system/ossc-{peer,agent}.service,
#      /usr/share/doc/ossc/
#    into --install-root when given (the container image uses this), and
# 4. builds ossc_<version>_<arch>.deb (dpkg-deb) and ossc-<version>-1.<arch>.rpm (rpmbuild)
#    into --out (default: <cargo target dir>/package), unless --no-packages.
# The version is the workspace's (Cargo.toml [workspace.package]).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

profile=release
out=
install_root=
packages=1
arch_list=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --install-root) install_root=$2; shift 2 ;;
    --no-packages) packages=0; shift ;;
    --arch) arch_list=$2; shift 2 ;;
    *) echo "package.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release | package-test) profile_dir=$profile ;;
  dev) profile_dir=debug ;;
  *) echo "package.sh: --profile must be release, dev or package-test" >&2; exit 2 ;;
esac

GLIBC_BASELINE=2.17
# cargo-zigbuild finds zig through `python3 -m ziglang` (the ziglang wheel): put the venv first.
if [ -x .venv/bin/cargo-zigbuild ]; then export PATH="$REPO/.venv/bin:$PATH"; fi
for tool in cargo-zigbuild objdump objcopy nm dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "package.sh: $tool not found (bash scripts/setup-env.sh installs it)" >&2; exit 1; }
done

target_dir=$(bash scripts/cargo-target-dir.sh)
out=${out:-$target_dir/package}
version=$(cargo metadata --format-version 1 --no-deps | python3 -c \
  'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "ossc-peer"))')

# --arch x86_64,aarch64: each is a complete build, so only the host's by default. Another
# architecture needs its rustup target (`rustup target add aarch64-unknown-linux-gnu`, from
# static.rust-lang.org).
IFS=, read -r -a arches <<<"${arch_list:-$(uname -m)}"
installed_targets=$(rustup target list --installed 2>/dev/null || true)
for arch in "${arches[@]}"; do
  case "$arch" in x86_64 | aarch64) ;; *) echo "package.sh: --arch: x86_64 or aarch64, not $arch" >&2; exit 2 ;; esac
  if [ "$arch" != "$(uname -m)" ] && ! grep -qx "$arch-unknown-linux-gnu" <<<"$installed_targets"; then
    echo "package.sh: rustup target $arch-unknown-linux-gnu is not installed" >&2
    exit 1
  fi
done

# Newest GLIBC_x.y symbol version a binary needs.
max_glibc() {
  { objdump -T "$1" 2>/dev/null || readelf --dyn-syms -W "$1"; } \
    | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1
}

check_glibc() {
  local need
  need=$(max_glibc "$1")
  if [ -z "$need" ]; then
    echo "package.sh: found no GLIBC_ symbol version in $1 (objdump -T / readelf)" >&2
    exit 1
  fi
  echo "package.sh: $(basename "$1") ($2) needs glibc >= $need"
  if [ "$(printf '%s\n%s\n' "$need" "$GLIBC_BASELINE" | sort -V | tail -n 1)" != "$GLIBC_BASELINE" ]; then
    echo "package.sh: $1 needs GLIBC_$need, above the $GLIBC_BASELINE baseline" >&2
    exit 1
  fi
}

# The install tree of one architecture's build under $1.
lay_out() {
  local root=$1 build=$2
  install -d -m 0755 "$root/usr/local/bin" "$root/usr/local/lib" "$root/etc/oss-connector" \
    "$root/usr/lib/systemd/system" "$root/usr/share/doc/ossc"
  # Debug sections off (the dev profile's are hundreds of MB); symbols stay.
  objcopy --strip-debug "$build/ossc" "$root/usr/local/bin/ossc" 2>/dev/null \
    || cp "$build/ossc" "$root/usr/local/bin/ossc"
  objcopy --strip-debug "$build/libossc_preload.so" "$root/usr/local/lib/libossc_preload.so" 2>/dev/null \
    || cp "$build/libossc_preload.so" "$root/usr/local/lib/libossc_preload.so"
  chmod 0755 "$root/usr/local/bin/ossc"
  chmod 0644 "$root/usr/local/lib/libossc_preload.so"
  install -m 0644 deploy/config.json "$root/etc/oss-connector/config.json"
  install -m 0644 deploy/systemd/ossc-peer.service deploy/systemd/ossc-agent.service \
    "$root/usr/lib/systemd/system/"
  install -m 0644 README.md "$root/usr/share/doc/ossc/README.md"
  install -m 0644 docs/configuration.md "$root/usr/share/doc/ossc/configuration.md"
  install -m 0644 docs/status.md "$root/usr/share/doc/ossc/status.md"
  install -m 0644 deploy/README.md "$root/usr/share/doc/ossc/deploy.md"
  install -m 0644 deploy/package/agent.env.example "$root/usr/share/doc/ossc/agent.env.example"
  install -m 0644 deploy/package/copyright "$root/usr/share/doc/ossc/copyright"
}

build_deb() {
  local stage=$1 arch=$2 debarch
  case "$arch" in x86_64) debarch=amd64 ;; aarch64) debarch=arm64 ;; esac
  local root
  root=$(mktemp -d "$out/deb-root.XXXXXX")
  chmod 0755 "$root"  # the archive's "./": mktemp's 0700 would end up on /
  cp -a "$stage/." "$root/"
  install -d -m 0755 "$root/DEBIAN"
  sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$debarch/" \
    -e "s/@SIZE_KB@/$(du -sk --exclude=DEBIAN "$root" | cut -f1)/" \
    deploy/package/deb/control >"$root/DEBIAN/control"
  install -m 0644 deploy/package/deb/conffiles "$root/DEBIAN/conffiles"
  install -m 0755 deploy/package/deb/postinst deploy/package/deb/prerm deploy/package/deb/postrm "$root/DEBIAN/"
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
    | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
  dpkg-deb --root-owner-group -Zgzip --build "$root" "$out/ossc_${version}_${debarch}.deb" >/dev/null
  rm -rf "$root"
  echo "package.sh: $out/ossc_${version}_${debarch}.deb"
}

build_rpm() {
  local stage=$1 arch=$2
  command -v rpmbuild >/dev/null || { echo "package.sh: rpmbuild not found (apt-get install rpm)" >&2; exit 1; }
  local top
  top=$(mktemp -d "$out/rpmbuild.XXXXXX")
  sed -e "s/@VERSION@/$version/" deploy/package/ossc.spec >"$top/ossc.spec"
  rpmbuild -bb --quiet --target "$arch" \
    --define "_topdir $top" --define "ossc_stage $stage" --define "_binary_payload w6.gzdio" \
    "$top/ossc.spec" >/dev/null
  mv "$top"/RPMS/"$arch"/ossc-"$version"-1."$arch".rpm "$out/"
  rm -rf "$top"
  echo "package.sh: $out/ossc-$version-1.$arch.rpm"
}

mkdir -p "$out"
rm -f "$out"/ossc_*.deb "$out"/ossc-*.rpm
for arch in "${arches[@]}"; do
  triple=$arch-unknown-linux-gnu
  args=(--locked --target "$triple.$GLIBC_BASELINE" --profile "$profile" -p ossc-peer -p ossc-preload)
  echo "package.sh: cargo zigbuild ${args[*]}"
  cargo zigbuild "${args[@]}"
  build=$target_dir/$triple/$profile_dir
  check_glibc "$build/ossc" "$arch"
  check_glibc "$build/libossc_preload.so" "$arch"
  # (grep without -q: under pipefail, an early exit of grep could fail nm with SIGPIPE.)
  nm -D --defined-only "$build/libossc_preload.so" | grep "ossc_preload_version_$version" >/dev/null \
    || { echo "package.sh: libossc_preload.so lacks the symbol ossc_preload_version_$version" >&2; exit 1; }

  stage=$(mktemp -d "$out/stage.XXXXXX")
  chmod 0755 "$stage"
  lay_out "$stage" "$build"
  if [ -n "$install_root" ] && [ "$arch" = "$(uname -m)" ]; then
    mkdir -p "$install_root"
    cp -a "$stage/." "$install_root/"
    echo "package.sh: installed the $arch tree into $install_root"
  fi
  if [ "$packages" = 1 ]; then
    build_deb "$stage" "$arch"
    build_rpm "$stage" "$arch"
  fi
  rm -rf "$stage"
done
