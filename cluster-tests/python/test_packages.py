"""The packages scripts/package.sh builds, checked as a user gets them: the .deb installed with
dpkg on this machine, the vendor's single-node command run verbatim against the installed
library and binary (the library finds /usr/local/bin/ossc by itself), then `dpkg -r` and
`dpkg --purge`; the .rpm's file list, scripts and conffile, and an `rpm -i --root` install.

The packages come from env OSSC_PACKAGE_DIR (scripts/test.sh builds them with
`scripts/package.sh --profile package-test`). Installing needs root; outside CI these tests skip loudly
without root or packages, in CI they fail. The system is restored (package purged, agent and
store stopped, directories the run created removed) even when a check fails.
"""
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from conftest import AK, REGION, REPO, SK, free_port, wait_port

IN_CI = bool(os.environ.get("CI"))
VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]
GLIBC_BASELINE = (2, 17)
BIN = "/usr/local/bin/ossc"
LIB = "/usr/local/lib/libossc_preload.so"
CONFFILE = "/etc/oss-connector/config.json"
UNITS = ["/usr/lib/systemd/system/ossc-peer.service", "/usr/lib/systemd/system/ossc-agent.service"]
DOCS = [f"/usr/share/doc/ossc/{n}" for n in
        ("README.md", "configuration.md", "status.md", "deploy.md", "agent.env.example", "copyright")]
FILES = {BIN, LIB, CONFFILE, *UNITS, *DOCS}
# What the vendor command creates at run time with the installed config (deploy/config.json)
# and the default socket path.
LOG_DIR = Path("/var/log/oss-connector")
SOCKET_DIR = Path("/tmp/oss-connector")


def skip_or_fail(msg):
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def package(pattern):
    d = os.environ.get("OSSC_PACKAGE_DIR")
    if not d:
        skip_or_fail("OSSC_PACKAGE_DIR is not set: build the packages with scripts/package.sh")
    found = sorted(glob.glob(os.path.join(d, pattern)))
    if len(found) != 1:
        pytest.fail(f"expected one {pattern} in {d}, found {found}")
    return Path(found[0])


def deb():
    return package(f"ossc_{VERSION}_amd64.deb")


def rpm():
    return package(f"ossc-{VERSION}-1.x86_64.rpm")


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                          timeout=120, **kw).stdout


def newest_glibc(path):
    versions = {tuple(int(x) for x in v.split("."))
                for v in re.findall(r"GLIBC_([0-9][0-9.]*[0-9])", run("objdump", "-T", path))}
    return max(versions)


def test_the_glibc_check_rejects_a_binary_built_against_this_hosts_glibc():
    # /bin/ls of this Debian 12 host needs GLIBC_2.34: the check must see it as too new.
    assert newest_glibc("/bin/ls") > GLIBC_BASELINE


def test_deb_holds_the_vendor_layout_a_glibc_2_17_build_and_the_version(tmp_path):
    pkg = deb()
    listing = run("dpkg-deb", "-c", pkg)
    files = {line.split()[-1].lstrip(".") for line in listing.splitlines() if line.startswith("-")}
    assert files == FILES
    modes = {line.split()[-1].lstrip("."): line.split()[0] for line in listing.splitlines()}
    assert modes[BIN] == "-rwxr-xr-x" and modes[LIB] == "-rw-r--r--"
    assert all(" root/root " in line for line in listing.splitlines())
    assert run("dpkg-deb", "-f", pkg, "Version").strip() == VERSION
    assert run("dpkg-deb", "-f", pkg, "Package").strip() == "ossc"
    ctrl = tmp_path / "control"
    run("dpkg-deb", "-e", pkg, ctrl)
    assert (ctrl / "conffiles").read_text().split() == [CONFFILE]
    root = tmp_path / "root"
    run("dpkg-deb", "-x", pkg, root)
    assert (root / CONFFILE.lstrip("/")).read_bytes() == (REPO / "deploy/config.json").read_bytes()
    for unit in UNITS:
        name = Path(unit).name
        assert (root / unit.lstrip("/")).read_bytes() == (REPO / "deploy/systemd" / name).read_bytes()
    for artefact in (BIN, LIB):
        need = newest_glibc(root / artefact.lstrip("/"))
        assert need <= GLIBC_BASELINE, f"{artefact} needs GLIBC_{'.'.join(map(str, need))}"
    symbols = run("nm", "-D", "--defined-only", root / LIB.lstrip("/"))
    assert re.search(rf"\bossc_preload_version_{re.escape(VERSION)}\b", symbols), symbols
    assert re.search(r"\bversion\b", symbols)
    out = run(root / BIN.lstrip("/"), "--version")
    assert VERSION in out


def test_rpm_lists_the_same_files_scripts_and_conffile_and_installs_into_a_root(tmp_path):
    pkg = rpm()
    if not shutil.which("rpm"):
        skip_or_fail("rpm is not installed (apt-get install rpm)")
    listed = set(run("rpm", "-qlp", pkg).split())
    assert listed == FILES | {"/etc/oss-connector", "/usr/share/doc/ossc"}
    assert run("rpm", "-qp", "--configfiles", pkg).split() == [CONFFILE]
    assert run("rpm", "-qp", "--queryformat", "%{NAME} %{VERSION} %{ARCH}", pkg) == f"ossc {VERSION} x86_64"
    scripts = run("rpm", "-qp", "--scripts", pkg)
    assert "useradd --system" in scripts and "systemctl stop ossc-peer.service" in scripts
    for section in ("preinstall", "postinstall", "preuninstall", "postuninstall"):
        assert f"{section} scriptlet" in scripts, section
    # An empty root has no shell or useradd for the scriptlets; the files are what is checked.
    root = tmp_path / "root"
    root.mkdir()
    run("rpm", "--root", root, "--initdb")
    run("rpm", "-i", "--nodeps", "--noscripts", "--root", root, pkg)
    assert run("rpm", "--root", root, "-q", "ossc").strip() == f"ossc-{VERSION}-1.x86_64"
    ref = tmp_path / "deb"
    run("dpkg-deb", "-x", deb(), ref)
    for f in FILES:
        assert (root / f.lstrip("/")).read_bytes() == (ref / f.lstrip("/")).read_bytes(), f
    assert os.stat(root / BIN.lstrip("/")).st_mode & 0o777 == 0o755
    run("rpm", "-e", "--nodeps", "--noscripts", "--root", root, "ossc")
    left = [f for f in FILES if (root / f.lstrip("/")).exists()]
    assert left == [], left


def dpkg_status():
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", "ossc"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def processes_of(exe):
    """Pids whose executable is `exe` (also after it was deleted), with their command lines."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            target = os.readlink(p / "exe")
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if target in (exe, exe + " (deleted)"):
            out[int(p.name)] = [c.decode(errors="replace") for c in cmd if c]
    return out


def stop(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


CONSUMER = """
import hashlib, json, os, sys
manifest = json.load(open(sys.argv[1]))
d = os.environ["MODEL_DIR"]
n = 0
for name, f in sorted(manifest["files"].items()):
    h = hashlib.sha256()
    with open(os.path.join(d, name), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == f["sha256"], name
    n += 1
print(n)
"""


def test_deb_installs_runs_the_vendor_command_and_removes_cleanly(tmp_path, model_source):
    pkg = deb()
    if os.geteuid() != 0:
        skip_or_fail("installing a .deb needs root")
    if dpkg_status():
        pytest.fail(f"package ossc is already on this machine ({dpkg_status()}); not touching it")
    for path in (BIN, LIB, "/etc/oss-connector"):
        if os.path.lexists(path):
            pytest.fail(f"{path} exists already: the package would take it over, purge would remove it")
    # Other tests may have logged to the default log directory (an `ossc` run without a config):
    # keep it aside, since purging the package deletes it.
    saved_logs = None
    if LOG_DIR.exists():
        saved_logs = LOG_DIR.with_name(f"{LOG_DIR.name}.saved-by-test-{os.getpid()}")
        LOG_DIR.rename(saved_logs)
    socket_dir_existed = SOCKET_DIR.exists()
    user_existed = subprocess.run(["getent", "passwd", "ossc"], capture_output=True).returncode == 0
    store_root, manifest, manifest_path = model_source
    store = None
    try:
        run("dpkg", "-i", pkg)
        assert dpkg_status() == "install ok installed"
        assert all(os.path.isfile(f) for f in FILES)
        assert os.stat(BIN).st_mode & 0o777 == 0o755 and os.stat(LIB).st_uid == 0
        assert run("getent", "passwd", "ossc").split(":")[6].strip().endswith("nologin")
        assert run("dpkg-query", "-W", "-f", "${Conffiles}", "ossc").split()[0] == CONFFILE

        port = free_port()
        store = subprocess.Popen([BIN, "serve-store", "--root", store_root, "--addr", f"127.0.0.1:{port}",
                                  "--region", REGION, "--access-key-id", AK, "--access-key-secret", SK],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        model_dir = tmp_path / "model"
        (tmp_path / "consumer.py").write_text(CONSUMER)
        # The vendor's command, verbatim; credentials and region exported before it, as the
        # vendor's guide does. PATH holds no ossc: the library must find its installed binary.
        vendor = (f"LD_PRELOAD={LIB} ENABLE_CONNECTOR=1 OSS_ENDPOINT=http://127.0.0.1:{port} "
                  f"OSS_PATH=oss://models/m1/ MODEL_DIR={model_dir} python3 consumer.py "
                  f"{shlex.quote(str(manifest_path))}")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "OSS_ACCESS_KEY_ID": AK,
               "OSS_ACCESS_KEY_SECRET": SK, "OSS_REGION": REGION}
        out = subprocess.run(["bash", "-c", vendor], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=180)
        log = (LOG_DIR / "connector.log").read_text(errors="replace") if LOG_DIR.exists() else ""
        assert out.returncode == 0, f"{out.stderr}\n--- connector.log ---\n{log[-3000:]}"
        assert int(out.stdout) == len(manifest["files"])
        agents = {p: c for p, c in processes_of(BIN).items() if "agent" in c}
        assert agents, "no agent runs from /usr/local/bin/ossc"
        audit = (LOG_DIR / "audit.log").read_text()
        big = [k for k in manifest["files"] if k.endswith(".safetensors")]
        assert big and all(name in audit for name in big), "the weights were not served by the agent"
        # coreutils' cp sizes its copy with statx on this glibc; the library, linked against
        # glibc 2.17 (which has no statx), must still interpose it (dlsym(RTLD_NEXT)).
        shard = big[0]
        copy = tmp_path / "copy.safetensors"
        attached = (f"LD_PRELOAD={LIB} ENABLE_CONNECTOR=2 MODEL_DIR={model_dir} "
                    f"cp {model_dir / shard} {copy}")
        out = subprocess.run(["bash", "-c", attached], env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == manifest["files"][shard]["sha256"]
        stop(list(agents))
        store.terminate()
        store.wait(timeout=10)
        store = None

        run("dpkg", "-r", "ossc")
        assert dpkg_status() == "deinstall ok config-files"
        left = [f for f in FILES if os.path.lexists(f)]
        assert left == [CONFFILE], left
        assert os.path.isdir("/usr/local/bin") and os.path.isdir("/usr/local/lib")
        run("dpkg", "--purge", "ossc")
        assert dpkg_status() == ""
        assert not os.path.lexists(CONFFILE) and not os.path.lexists("/etc/oss-connector")
        assert not LOG_DIR.exists()
        if not user_existed:
            assert subprocess.run(["getent", "passwd", "ossc"], capture_output=True).returncode != 0
    finally:
        if store is not None:
            store.kill()
            store.wait(timeout=10)
        stop(list(processes_of(BIN)))
        if dpkg_status():
            subprocess.run(["dpkg", "--purge", "ossc"], capture_output=True, timeout=120)
        if not socket_dir_existed:
            subprocess.run(["rm", "-rf", str(SOCKET_DIR)], timeout=60)
        subprocess.run(["rm", "-rf", str(LOG_DIR)], timeout=60)
        if saved_logs is not None:
            saved_logs.rename(LOG_DIR)


@pytest.mark.parametrize("unit", ["ossc-peer.service", "ossc-agent.service"])
def test_units_are_hardened(unit):
    if not shutil.which("systemd-analyze"):
        skip_or_fail("systemd-analyze is not installed (apt-get install systemd)")
    path = REPO / "deploy/systemd" / unit
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", out.stdout + out.stderr)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 4.0, out.stdout
    text = path.read_text()
    # The daemon runs as its own user, with what the packages install.
    assert re.search(r"^User=ossc$", text, re.M) and "ExecStart=/usr/local/bin/ossc " in text
