"""Bad input through the preload library: each case gives a clear error
(an errno in the application plus a log line) or completes with exact bytes.
The host process never crashes and never sees wrong bytes or zeros."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import Node, start_store

# Reads every file the manifest names; prints one JSON line:
# {"ok": [...], "errors": {name: errno}, "wrong": [...]}
READER = """
import hashlib, json, os, sys
m = json.load(open(sys.argv[1]))
d = os.environ["MODEL_DIR"]
res = {"ok": [], "errors": {}, "wrong": []}
for name, f in sorted(m["files"].items()):
    try:
        data = open(os.path.join(d, name), "rb").read()
    except OSError as e:
        res["errors"][name] = e.errno
        continue
    (res["ok"] if hashlib.sha256(data).hexdigest() == f["sha256"] else res["wrong"]).append(name)
print(json.dumps(res))
"""


def read_all(node, manifest_path, role="1", timeout=180):
    script = node.tmp / "reader.py"
    script.write_text(READER)
    out = node.run([sys.executable, str(script), str(manifest_path)], role=role, timeout=timeout, check=False)
    assert out.returncode == 0, f"host process failed (rc {out.returncode}): {out.stderr.decode()[-2000:]}"
    return json.loads(out.stdout.decode().strip().splitlines()[-1]), out


def all_text(node, out):
    return node.log_text() + out.stderr.decode(errors="replace")


def assert_clean_failure(node, res, out, *needles):
    assert res["wrong"] == [], f"WRONG BYTES served: {res['wrong']}"
    assert res["ok"] == [] or res["errors"] == {}, res
    text = all_text(node, out)
    assert any(n in text for n in needles), f"none of {needles} in log/stderr:\n{text[-3000:]}"


def test_wrong_secret(tmp_path, store, model_source):
    node = Node(tmp_path, store, OSS_ACCESS_KEY_SECRET="not-the-secret")
    res, out = read_all(node, model_source[2])
    assert res["errors"], "a wrong secret must fail the opens"
    assert_clean_failure(node, res, out, "SignatureDoesNotMatch")
    node.stop_agent()


def test_no_credentials_for_private_bucket(tmp_path, store, model_source):
    node = Node(tmp_path, store, OSS_ACCESS_KEY_ID="", OSS_ACCESS_KEY_SECRET="")
    res, out = read_all(node, model_source[2])
    assert res["errors"]
    assert_clean_failure(node, res, out, "AccessDenied")
    node.stop_agent()


def test_missing_bucket(tmp_path, store, model_source):
    node = Node(tmp_path, store, oss_path="oss://no-such-bucket/m1/")
    res, out = read_all(node, model_source[2])
    assert res["errors"]
    assert_clean_failure(node, res, out, "NoSuchBucket")
    node.stop_agent()


def test_unreachable_endpoint(tmp_path, model_source):
    node = Node(tmp_path, None)  # endpoint http://127.0.0.1:1: connection refused
    node.config.write_text(json.dumps({**json.loads(node.config.read_text())}))
    res, out = read_all(node, model_source[2])
    assert res["errors"]
    assert_clean_failure(node, res, out, "onnect", "refused")
    node.stop_agent()


def test_malformed_config(tmp_path, store, model_source):
    node = Node(tmp_path, store)
    node.config.write_text('{"logLevel": 1, "prefetch": {"vcpus": "sixteen"}}')
    res, out = read_all(node, model_source[2])
    assert res["errors"], "a malformed config must fail the opens, not serve zeros"
    assert_clean_failure(node, res, out, "prefetch.vcpus")
    node.stop_agent()


def test_foreign_files_in_model_dir_are_kept(tmp_path, store, model_source):
    node = Node(tmp_path, store)
    node.model_dir.mkdir(parents=True)
    foreign = node.model_dir / "config.json"
    foreign.write_text("my own config, not from the bucket")
    unrelated = node.model_dir / "notes.txt"
    unrelated.write_text("keep me")
    res, out = read_all(node, model_source[2])
    assert res["wrong"] == [] or res["wrong"] == ["config.json"], res
    assert foreign.read_text() == "my own config, not from the bucket", "a foreign file was overwritten"
    assert unrelated.read_text() == "keep me"
    assert "config.json" in node.log_text() and "foreign" in node.log_text().lower()
    shards = [n for n in model_source[1]["files"] if n.endswith(".safetensors")]
    assert set(shards) <= set(res["ok"]), "non-colliding objects still load"
    node.stop_agent()


def test_store_faults_mid_load_complete_with_exact_bytes(tmp_path, store, model_source):
    store.set_faults({"seed": 7, "error_rate": 0.15, "error_status": 503,
                      "error_code": "DownloadTrafficRateLimitExceeded", "reset_rate": 0.05, "truncate_rate": 0.05})
    node = Node(tmp_path, store, config={"prefetch": {"vcpus": 2, "workers": 4, "partSizeBytes": 1 << 20}})
    try:
        res, out = read_all(node, model_source[2])
        assert res["wrong"] == [] and res["errors"] == {}, res
        assert len(res["ok"]) == len(model_source[1]["files"])
        assert store.stats()["faults"]["errors"] > 0, "faults were not injected"
    finally:
        store.set_faults({})
        node.stop_agent()


def test_object_replaced_mid_download_is_never_spliced(tmp_path, model_source):
    import shutil
    root = tmp_path / "store"
    shutil.copytree(model_source[0], root)
    s = start_store(root)
    try:
        shard = sorted(n for n in model_source[1]["files"] if n.endswith(".safetensors"))[0]
        old_sha = model_source[1]["files"][shard]["sha256"]
        # Slow the store so the shard is fetched in many parts while it is replaced.
        s.set_faults({"replace_key": f"m1/{shard}", "bandwidth_bytes_per_sec": 64 << 20})
        (tmp_path / "n").mkdir()
        node = Node(tmp_path / "n", s, config={"prefetch": {"vcpus": 2, "workers": 4, "partSizeBytes": 1 << 20}})
        code = (
            "import hashlib, os\n"
            f"p = os.path.join(os.environ['MODEL_DIR'], {shard!r})\n"
            "try:\n    print(hashlib.sha256(open(p, 'rb').read()).hexdigest())\n"
            "except OSError as e:\n    print('errno', e.errno)\n"
        )
        out = node.python(code, check=False)
        assert out.returncode == 0, out.stderr
        answer = out.stdout.decode().split()
        new_sha = hashlib.sha256((root / "models" / "m1" / shard).read_bytes()).hexdigest()
        assert new_sha != old_sha, "the store did not replace the object"
        if answer[0] == "errno":
            assert int(answer[1]) != 0
            assert "changed" in all_text(node, out).lower(), all_text(node, out)[-2000:]
        else:
            # Only a whole version is acceptable, never a splice of both.
            assert answer[0] in (old_sha, new_sha), "SPLICED: bytes of two object versions mixed"
        node.stop_agent()
    finally:
        s.proc.terminate()


def test_agent_killed_mid_load(tmp_path, store, model_source):
    store.set_faults({"bandwidth_bytes_per_sec": 24 << 20})
    node = Node(tmp_path, store, config={"prefetch": {"vcpus": 1, "workers": 4, "partSizeBytes": 1 << 20}})
    try:
        script = node.tmp / "reader.py"
        script.write_text(READER)
        proc = subprocess.Popen([sys.executable, str(script), str(model_source[2])],
                                env={**node.env, "ENABLE_CONNECTOR": "1"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while not node.agent_pids() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        for pid in node.agent_pids():
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"host crashed: {err.decode()[-2000:]}"
        res = json.loads(out.decode().strip().splitlines()[-1])
        assert res["wrong"] == [], f"WRONG BYTES after agent death: {res}"
        assert res["errors"], "some opens must fail once the agent is gone"
        assert all(e in (5, 111, 2, 104, 32) for e in res["errors"].values()), res["errors"]
    finally:
        store.set_faults({})
        node.stop_agent()
