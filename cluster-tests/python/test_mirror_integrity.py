"""MODEL_DIR integrity through the real preload library and `ossc serve-store`:
every small file the agent publishes holds exactly its object's bytes, on the
first run and on a run over an existing MODEL_DIR, with the hook and without
it; what MODEL_DIR already holds (a planted manifest, symlinks) is never
trusted or followed outside it."""
import hashlib
import json
import os

from conftest import OSSC_BIN, Node, start_store
from test_bad_input import read_all

PREFIX = "small"


def small_objects():
    """Names that share long prefixes, look like temp names, or are unicode."""
    long = "x" * 64
    names = [f"{long}_{i:02}.json" for i in range(40)]
    names += [
        f".{long}.ossc-tmp.12345",
        ".ossc-tmp.0123456789abcdef",
        "config.json.ossc-partial",
        "日本語_модель_🙂.json",
        "y" * 240 + "a",
        "y" * 240 + "b",
    ]
    return {n: json.dumps({"name": n, "i": i, "pad": "z" * (37 * i)}).encode() for i, n in enumerate(names)}


def make_store(tmp_path, objects):
    root = tmp_path / "store"
    model = root / "models" / PREFIX
    model.mkdir(parents=True)
    for name, data in objects.items():
        (model / name).write_bytes(data)
    want = tmp_path / "want.json"
    want.write_text(json.dumps({"files": {n: {"sha256": hashlib.sha256(d).hexdigest()} for n, d in objects.items()}}))
    return start_store(root), want


def node_for(tmp_path, store):
    (tmp_path / "node").mkdir()
    return Node(tmp_path / "node", store, oss_path=f"oss://models/{PREFIX}/")


def assert_exact(node, want, role):
    res, out = read_all(node, want, role=role)
    assert res["wrong"] == [], f"WRONG BYTES ({role=}): {res['wrong']}"
    assert res["errors"] == {}, f"failed opens ({role=}): {res['errors']}\n{node.log_text()[-3000:]}"
    return res


def assert_model_dir_exact(node, objects):
    for name, data in objects.items():
        assert (node.model_dir / name).read_bytes() == data, name
    leftovers = sorted(set(os.listdir(node.model_dir)) - set(objects) - {".ossc-manifest.json"})
    assert leftovers == [], f"temp files left in MODEL_DIR: {leftovers}"


def test_small_files_are_exact_on_every_run_with_and_without_the_hook(tmp_path):
    objects = small_objects()
    store, want = make_store(tmp_path, objects)
    node = node_for(tmp_path, store)
    try:
        assert_exact(node, want, role="1")
        assert_model_dir_exact(node, objects)
        node.stop_agent()
        # Second run over the same MODEL_DIR: reused files are still exact.
        assert_exact(node, want, role="1")
        node.stop_agent()
        assert_exact(node, want, role=None)
        assert_model_dir_exact(node, objects)

        # Same size, same manifest entry, other bytes: the next run refetches.
        victim = node.model_dir / f"{'x' * 64}_07.json"
        data = bytearray(victim.read_bytes())
        data[0] ^= 0xFF
        victim.write_bytes(bytes(data))
        assert_exact(node, want, role="1")
        node.stop_agent()
        assert_exact(node, want, role=None)
        assert "content changed; refetching" in node.log_text()
    finally:
        node.stop_agent()
        store.proc.terminate()
        store.proc.wait(timeout=10)


def test_planted_manifest_and_symlinks_never_reach_outside_model_dir(tmp_path):
    objects = {"config.json": b'{"a": 1}', "link.json": b"{}", "sub/inner.json": b"{}"}
    store, want = make_store(tmp_path, {"config.json": objects["config.json"]})
    (store.root / "models" / PREFIX / "sub").mkdir()
    for name in ("link.json", "sub/inner.json"):
        (store.root / "models" / PREFIX / name).write_bytes(objects[name])
    node = node_for(tmp_path, store)
    outside = tmp_path / "outside"
    (outside / "empty").mkdir(parents=True)
    (outside / "sub").mkdir()
    victims = {"victim": b"precious 1", "abs-victim": b"precious 2", "target-victim": b"precious 3"}
    for name, data in victims.items():
        (outside / name).write_bytes(data)
    node.model_dir.mkdir(parents=True)
    (node.model_dir / "link.json").symlink_to(outside / "target-victim")
    (node.model_dir / "sub").symlink_to(outside / "sub")

    def entry(name):
        return {"key": "k", "size": len(victims[name]), "etag": "e", "kind": "small"}

    planted = {
        "version": 1, "bucket": "models", "prefix": f"{PREFIX}/",
        "files": {"../outside/victim": entry("victim"), str(outside / "abs-victim"): entry("abs-victim")},
        "dirs": ["../outside/empty"],
    }
    (node.model_dir / ".ossc-manifest.json").write_text(json.dumps(planted))
    try:
        res, out = read_all(node, want, role="1")
        assert res == {"ok": ["config.json"], "errors": {}, "wrong": []}, res
        probe = node.python(
            "import os\n"
            "for p in ('link.json', 'sub/inner.json'):\n"
            "    try:\n"
            "        open(os.path.join(os.environ['MODEL_DIR'], p), 'rb').read(); print(p, 'opened')\n"
            "    except OSError as e:\n"
            "        print(p, e.errno)\n",
            check=False,
        )
        assert probe.stdout.decode().split() == ["link.json", "17", "sub/inner.json", "17"], probe
    finally:
        node.stop_agent()
        store.proc.terminate()
        store.proc.wait(timeout=10)
    for name, data in victims.items():
        assert (outside / name).read_bytes() == data, f"{name} changed"
    assert (outside / "empty").is_dir(), "a directory outside MODEL_DIR was removed"
    assert os.listdir(outside / "sub") == [], "written through a symlinked directory"
    manifest = json.loads((node.model_dir / ".ossc-manifest.json").read_text())
    assert sorted(manifest["files"]) == ["config.json"], manifest


def test_ossc_cp_copies_keys_named_like_its_temp_files_exactly(tmp_path):
    # `a.json` takes many ranged GETs; the small keys named like temp files
    # land while it is still downloading.
    objects = {
        "a.json": os.urandom(8 << 20),
        "a.json.ossc-partial": b"tiny",
        ".ossc-tmp.0123456789abcdef": b"also tiny",
        "日本語_🙂.json": b"{}",
    }
    store, _ = make_store(tmp_path, objects)
    node = node_for(tmp_path, store)
    node.config.write_text(json.dumps({"prefetch": {"vcpus": 2, "workers": 4, "partSizeBytes": 256 << 10}}))
    dest = tmp_path / "dest"
    try:
        out = node.run([str(OSSC_BIN), "cp", f"oss://models/{PREFIX}/", str(dest), "--quiet"], role=None, check=False)
    finally:
        store.proc.terminate()
        store.proc.wait(timeout=10)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    for name, data in objects.items():
        assert (dest / name).read_bytes() == data, f"{name}: wrong bytes"
    assert sorted(os.listdir(dest)) == sorted(objects), "temp files left behind"
