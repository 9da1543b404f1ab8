"""Fixtures for cross-process tests: a real `ossc serve-store` (or moto) serving a
generated model, and helpers to run consumers under libossc_preload.so.

Everything runs on 127.0.0.1 with ports picked by the OS. Each test gets its
own MODEL_DIR, agent socket and log files, so tests never share an agent.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cargo_target_dir():
    """Where cargo builds ($CARGO_TARGET_DIR, .cargo/config.toml or <repo>/target), as cargo says."""
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO,
                          check=True, capture_output=True, text=True).stdout
    return Path(json.loads(meta)["target_directory"])


OSSC_BIN = Path(os.environ.get("OSSC_BIN") or cargo_target_dir() / "debug" / "ossc")
PRELOAD = Path(os.environ.get("OSSC_PRELOAD_LIB") or cargo_target_dir() / "debug" / "libossc_preload.so")
AK, SK = "test-ak", "test-sk-secret"
REGION = "cn-test"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


class Store:
    """A running `ossc serve-store` with its control plane."""

    def __init__(self, root, port, proc):
        self.root, self.port, self.proc = root, port, proc
        self.endpoint = f"http://127.0.0.1:{port}"

    def _call(self, method, path, body=None):
        """A control-plane request, signed (OSS V1) as a store with
        credentials requires: like a request to bucket `_ossc`."""
        import base64
        import email.utils
        import hashlib
        import hmac
        import urllib.request

        content_type = "application/json" if body is not None else ""
        date = email.utils.formatdate(usegmt=True)
        string_to_sign = f"{method}\n\n{content_type}\n{date}\n{path}"
        signature = base64.b64encode(
            hmac.new(SK.encode(), string_to_sign.encode(), hashlib.sha1).digest()
        ).decode()
        headers = {"Date": date, "Authorization": f"OSS {AK}:{signature}"}
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.endpoint + path, method=method, data=body, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
        return json.loads(data) if data else None

    def stats(self):
        return self._call("GET", "/_ossc/stats")

    def reset(self):
        self._call("POST", "/_ossc/reset")

    def set_faults(self, faults):
        self._call("PUT", "/_ossc/faults", json.dumps(faults).encode())

    def bytes_served(self):
        s = self.stats()
        return s["bytes_served"]


@pytest.fixture(scope="session")
def model_source(tmp_path_factory):
    """A generated multi-shard model inside a store root (bucket `models`, prefix `m1/`)."""
    root = tmp_path_factory.mktemp("store")
    model = root / "models" / "m1"
    manifest = root.parent / "m1-manifest.json"
    subprocess.run(
        [OSSC_BIN, "gen-model", model, "--size-mb", "96", "--shards", "4", "--manifest", manifest],
        check=True,
    )
    return root, json.loads(manifest.read_text()), manifest


def start_store(root, credentials=True):
    port = free_port()
    cmd = [OSSC_BIN, "serve-store", "--root", root, "--addr", f"127.0.0.1:{port}", "--region", REGION]
    if credentials:
        cmd += ["--access-key-id", AK, "--access-key-secret", SK]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return Store(root, port, proc)


@pytest.fixture
def store(model_source):
    s = start_store(model_source[0])
    yield s
    s.proc.terminate()
    s.proc.wait(timeout=10)


class Node:
    """One node instance: MODEL_DIR, agent socket, config and logs in a temp dir."""

    def __init__(self, tmp, store, oss_path="oss://models/m1/", config=None, **env):
        self.tmp = Path(tmp)
        self.model_dir = self.tmp / "model"
        self.socket = self.tmp / "agent" / "connector.sock"
        self.log = self.tmp / "connector.log"
        self.audit = self.tmp / "audit.log"
        cfg = {"logLevel": 0, "logPath": str(self.log), "auditPath": str(self.audit), "expireTimeSec": 120,
               "prefetch": {"vcpus": 4, "workers": 8}}
        cfg.update(config or {})
        self.config = self.tmp / "config.json"
        self.config.write_text(json.dumps(cfg))
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "LD_PRELOAD": str(PRELOAD),
            "ENABLE_CONNECTOR": "1",
            "MODEL_DIR": str(self.model_dir),
            "OSS_PATH": oss_path,
            "OSS_ENDPOINT": store.endpoint if store else "http://127.0.0.1:1",
            "OSS_REGION": REGION,
            "OSS_ACCESS_KEY_ID": AK,
            "OSS_ACCESS_KEY_SECRET": SK,
            "OSS_CONNECTOR_CONFIG": str(self.config),
            "CONNECTOR_UDS_PATH": str(self.socket),
            "OSSC_AGENT_BIN": str(OSSC_BIN),
        }
        self.env.update({k: str(v) for k, v in env.items()})

    def run(self, args, role="1", check=True, timeout=120, extra_env=None, **kw):
        env = dict(self.env)
        if role is None:
            env.pop("ENABLE_CONNECTOR")
        else:
            env["ENABLE_CONNECTOR"] = role
        env.update(extra_env or {})
        return subprocess.run(args, env=env, check=check, timeout=timeout, capture_output=True, **kw)

    def python(self, code, role="1", **kw):
        return self.run([sys.executable, "-c", code], role=role, **kw)

    def status(self):
        out = subprocess.run([OSSC_BIN, "status", "--socket", self.socket, "--json"],
                             capture_output=True, check=True, timeout=30)
        return json.loads(out.stdout)

    def start_keeper(self, timeout=60.0):
        """A main process (ENABLE_CONNECTOR=1) that holds the agent alive; returns once the agent answers
        STATUS, so that secondaries started next find it (a secondary never spawns one)."""
        keeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                  env={**self.env, "ENABLE_CONNECTOR": "1"})
        deadline = time.time() + timeout
        while True:
            probe = subprocess.run([OSSC_BIN, "status", "--socket", self.socket, "--json"], capture_output=True,
                                   timeout=30)
            if probe.returncode == 0:
                return keeper
            if keeper.poll() is not None or time.time() > deadline:
                keeper.kill()
                raise AssertionError(f"the agent did not come up within {timeout} s: {self.log_text()[-2000:]}")
            time.sleep(0.1)

    def agent_pids(self):
        out = subprocess.run(["pgrep", "-f", f"ossc agent"], capture_output=True, text=True)
        pids = []
        for pid in out.stdout.split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"CONNECTOR_UDS_PATH={self.socket}".encode() in env:
                pids.append(int(pid))
        return pids

    def stop_agent(self):
        for pid in self.agent_pids():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while self.agent_pids() and time.time() < deadline:
            time.sleep(0.1)

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def node(tmp_path, store):
    n = Node(tmp_path, store)
    yield n
    n.stop_agent()
