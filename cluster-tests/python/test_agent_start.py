"""Starting the node agent from the preload: a start that fails is remembered
(opens fail at once, one log line quoting the agent), and the vendor's
`"expireTimeSec": 0` never stops the agent before its starter registered."""
import hashlib
import sys
import time

from conftest import Node


def test_expire_time_zero_loads(tmp_path, store, model_source):
    root, manifest, _ = model_source
    n = Node(tmp_path, store, config={"expireTimeSec": 0})
    try:
        shard = sorted(k for k in manifest["files"] if k.endswith(".safetensors"))[0]
        code = f"""
import hashlib, os
print(hashlib.sha256(open(os.path.join(os.environ["MODEL_DIR"], {shard!r}), "rb").read()).hexdigest())
"""
        out = n.python(code)
        want = hashlib.sha256((root / "models" / "m1" / shard).read_bytes()).hexdigest()
        assert out.stdout.decode().strip() == want, out.stderr
    finally:
        n.stop_agent()


def test_a_failed_start_fails_40_opens_at_once_with_one_line(tmp_path, store):
    n = Node(tmp_path, store)
    # A custom endpoint without OSS_REGION: the agent refuses to start.
    n.env.pop("OSS_REGION")
    code = """
import os, sys
d = os.environ["MODEL_DIR"]
codes = set()
for i in range(40):
    try:
        open(os.path.join(d, "file%02d.json" % i), "rb").read()
        codes.add(0)
    except OSError as e:
        codes.add(e.errno)
print(sorted(codes))
"""
    started = time.monotonic()
    out = n.python(code)
    took = time.monotonic() - started
    stderr = out.stderr.decode()
    assert out.stdout.decode().strip() == "[5]", stderr
    assert took < 15, f"40 opens took {took:.1f} s"
    errors = [l for l in stderr.splitlines() if " ERROR " in l]
    assert len(errors) == 1, stderr
    assert "OSS_REGION" in errors[0], errors[0]
    # A second process within the cool-down does not try again.
    started = time.monotonic()
    out = n.python(code)
    assert time.monotonic() - started < 5
    errors = [l for l in out.stderr.decode().splitlines() if " ERROR " in l]
    assert len(errors) == 1 and "not starting it again" in errors[0], out.stderr
    assert not n.agent_pids()
