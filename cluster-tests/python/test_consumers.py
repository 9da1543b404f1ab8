"""Real consumers reading a model through libossc_preload.so: safetensors,
Python file APIs and shell tools. Every check compares full content."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import Node, OSSC_BIN, PRELOAD


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def big_files(manifest):
    return [k for k in manifest["files"] if k.endswith(".safetensors")]


def test_safetensors_reads_every_tensor_exactly(node, model_source):
    _, manifest, manifest_path = model_source
    code = f"""
import glob, hashlib, json, os
from safetensors import safe_open
m = json.load(open({str(manifest_path)!r}))
d = os.environ["MODEL_DIR"]
assert os.path.isdir(d) and os.path.isfile(os.path.join(d, "config.json"))
cfg = json.load(open(os.path.join(d, "config.json")))
assert cfg["model_type"] == "llama"
n = 0
for shard in sorted(glob.glob(d + "/*.safetensors")):
    with safe_open(shard, framework="np") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            assert hashlib.sha256(t.tobytes()).hexdigest() == m["tensors"][k]["sha256"], k
            n += 1
print(n)
"""
    out = node.python(code)
    assert int(out.stdout) == len(manifest["tensors"]), out.stderr
    audit = node.audit.read_text()
    for name in big_files(manifest):
        assert name in audit, f"no audit line for {name}"


def test_python_file_apis_are_byte_exact(node, model_source):
    root, manifest, _ = model_source
    src = root / "models" / "m1"
    out_dir = node.tmp / "copies"
    code = f"""
import hashlib, mmap, os, shutil, random
d, src, out = os.environ["MODEL_DIR"], {str(src)!r}, {str(out_dir)!r}
os.makedirs(out, exist_ok=True)
for name in sorted(os.listdir(src)):
    want = open(os.path.join(src, name), "rb").read()
    p = os.path.join(d, name)
    assert os.path.getsize(p) == len(want), name
    assert open(p, "rb").read() == want, "read " + name
    shutil.copyfile(p, os.path.join(out, name))            # sendfile / copy_file_range
    assert open(os.path.join(out, name), "rb").read() == want, "copyfile " + name
    if want:
        with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            assert m[:] == want, "mmap " + name
    fd = os.open(p, os.O_RDONLY)
    try:
        rnd = random.Random(name)
        for _ in range(50):
            off = rnd.randrange(0, max(1, len(want)))
            n = rnd.randrange(1, 1 << 16)
            assert os.pread(fd, n, off) == want[off:off + n], "pread " + name
        st = os.fstat(fd)
        assert st.st_size == len(want)
        dup = os.dup(fd)
        os.lseek(fd, 0, 0)
        assert os.read(dup, 16) == want[:16]
        os.close(dup)
    finally:
        os.close(fd)
print("ok")
"""
    out = node.python(code)
    assert out.stdout.strip() == b"ok", out.stderr


def test_shell_tools_are_byte_exact(node, model_source):
    root, manifest, _ = model_source
    node.python("print(1)")  # the main starts the agent and mirrors MODEL_DIR
    md = node.model_dir
    names = sorted(manifest["files"])
    out = node.run(["sha256sum"] + [str(md / n) for n in names], role="2")
    got = {Path(line.split()[1]).name: line.split()[0] for line in out.stdout.decode().splitlines()}
    assert got == {n: manifest["files"][n]["sha256"] for n in names}
    shard = big_files(manifest)[0]
    node.run(["sh", "-c", f"cat '{md / shard}' > '{node.tmp / 'cat.out'}'"], role="2")
    node.run(["cp", str(md / shard), str(node.tmp / "cp.out")], role="2")
    for f in ["cat.out", "cp.out"]:
        assert sha256_file(node.tmp / f) == manifest["files"][shard]["sha256"], f
    # Metadata works without the hook: sizes are exact, the tree is real.
    ls = subprocess.run(["ls", "-l", str(md)], capture_output=True, text=True, check=True).stdout
    for n in names:
        size = manifest["files"][n]["size"]
        assert any(line.endswith(" " + n) and f" {size} " in line for line in ls.splitlines()), (n, ls)
    found = subprocess.run(["find", str(md), "-type", "f", "-not", "-name", ".*"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert sorted(Path(p).name for p in found) == names


def test_main_with_fork_and_spawn_children_fetches_once(node, store, model_source):
    _, manifest, manifest_path = model_source
    store.reset()
    code = f"""
import hashlib, json, multiprocessing as mp, os, sys
m = json.load(open({str(manifest_path)!r}))
d = os.environ["MODEL_DIR"]
def check(name):
    data = open(os.path.join(d, name), "rb").read()
    return hashlib.sha256(data).hexdigest() == m["files"][name]["sha256"]
names = sorted(m["files"])
if __name__ == "__main__":
    assert all(check(n) for n in names)
    os.environ["ENABLE_CONNECTOR"] = "2"
    for method in ("fork", "spawn"):
        with mp.get_context(method).Pool(3) as pool:
            assert all(pool.map(check, names * 2)), method
    print("ok")
"""
    script = node.tmp / "mp_main.py"
    script.write_text(code)
    # A second process that wrongly claims main while the first one is alive.
    first = subprocess.Popen([sys.executable, str(script)], env={**node.env, "ENABLE_CONNECTOR": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while not (node.agent_pids() and node.socket.exists()) and time.time() < deadline:
        time.sleep(0.05)
    second = node.run([sys.executable, str(script)], role="1")
    out, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    assert out.strip() == b"ok" and second.stdout.strip() == b"ok", second.stderr
    assert len(node.agent_pids()) == 1, "exactly one agent per node instance"
    served = store.bytes_served()
    total = sum(f["size"] for f in manifest["files"].values())
    assert served <= total * 1.05, f"store served {served} bytes for a {total}-byte model: fetched more than once"
    assert "secondary" in node.log_text(), "the process that wrongly claimed main should log that it is secondary"


def test_process_without_role_is_unaffected(tmp_path, store, model_source):
    node = Node(tmp_path, store)
    workload = (
        "import hashlib, os, subprocess\n"
        "print(sorted(os.listdir('/etc'))[:20])\n"
        "print(hashlib.sha256(open('/etc/os-release','rb').read()).hexdigest())\n"
        "print(subprocess.run(['true']).returncode)\n"
        "try:\n    open('/nonexistent/x')\nexcept OSError as e:\n    print(e.errno)\n"
    )
    with_hook = node.python(workload, role=None)
    env = {k: v for k, v in node.env.items() if k not in ("LD_PRELOAD", "ENABLE_CONNECTOR")}
    without = subprocess.run([sys.executable, "-c", workload], env=env, capture_output=True, check=True)
    assert with_hook.stdout == without.stdout
    assert with_hook.stderr == without.stderr == b""
    assert not node.model_dir.exists(), "a process without a role must not start the agent"
    assert node.agent_pids() == []


def test_expiry_frees_memory_and_refetches_exact_bytes(tmp_path, store, model_source):
    _, manifest, _ = model_source
    node = Node(tmp_path, store, config={"expireTimeSec": 1})
    try:
        shard = big_files(manifest)[0]
        want = manifest["files"][shard]["sha256"]
        read = f"import hashlib,os; print(hashlib.sha256(open(os.path.join(os.environ['MODEL_DIR'], {shard!r}),'rb').read()).hexdigest())"
        # A registered process keeps the agent alive (it idle-exits expireTimeSec after its
        # last client), so what we observe is the file's memory expiring, not the agent exiting.
        keeper = node.start_keeper()
        assert node.python(read).stdout.decode().strip() == want
        store.reset()
        deadline = time.time() + 30
        while time.time() < deadline:
            st = node.status()
            f = [x for x in st["files"] if x["path"] == shard][0]
            if st["bytes_resident"] == 0 and f["state"] != "ready":
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"memory not freed after expiry: {st['bytes_resident']} bytes resident, {f}")
        assert node.python(read, role="2").stdout.decode().strip() == want
        assert store.bytes_served() >= manifest["files"][shard]["size"], "a read after expiry must refetch"
        keeper.kill()
    finally:
        node.stop_agent()


def test_status_metrics_and_metadata_without_the_hook(tmp_path, store, model_source):
    import urllib.request
    from conftest import free_port

    _, manifest, _ = model_source
    port = free_port()
    node = Node(tmp_path, store, OSS_CONNECTOR_METRICS_LISTEN=f"127.0.0.1:{port}")
    keeper = node.start_keeper()
    try:
        shard = big_files(manifest)[0]
        read = f"import os; open(os.path.join(os.environ['MODEL_DIR'], {shard!r}), 'rb').read()"
        node.python(read, role="2")
        # A person's view of the agent.
        human = subprocess.run([OSSC_BIN, "status", "--socket", node.socket], capture_output=True, text=True,
                               check=True).stdout
        assert "bytes by source" in human and shard in human, human
        # Prometheus.
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        store_bytes = [l for l in body.splitlines() if l.startswith('ossc_bytes_total{source="store"}')]
        assert store_bytes and int(store_bytes[0].split()[-1]) >= manifest["files"][shard]["size"], body
        # The shard was verified end to end (the embedded store sends CRC-64), and says so.
        assert f'ossc_file_unverified{{path="{shard}"}} 0' in body.splitlines(), body
        audit = [json.loads(l) for l in node.audit.read_text().splitlines()]
        assert any(a["path"] == shard and a.get("verified_by") == "crc64" for a in audit), audit
        # Metadata works for a process WITHOUT the hook: the tree is real.
        code = f"""
import json, os, pathlib
d = pathlib.Path({str(node.model_dir)!r})
m = json.load(open({str(model_source[2])!r}))
assert os.path.isdir(d)
names = sorted(p.name for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
assert names == sorted(m["files"]), names
for n, f in m["files"].items():
    assert os.path.getsize(d / n) == f["size"], n
    assert os.path.realpath(d / n) == str((d / n).resolve())
assert sorted(p.name for p in d.glob("*.safetensors")) == sorted(n for n in m["files"] if n.endswith(".safetensors"))
print("ok")
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "ok"
    finally:
        keeper.kill()
        node.stop_agent()
