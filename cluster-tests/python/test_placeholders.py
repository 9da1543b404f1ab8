"""Placeholders never read as zeros through the hook: a placeholder reached
through a symlink outside MODEL_DIR is served its exact bytes, and one opened
for writing (numpy `memmap(mode="r+")`) fails cleanly with EROFS."""
import hashlib

from conftest import Node  # noqa: F401  (the `node` fixture lives there)


def first_shard(manifest):
    return sorted(k for k in manifest["files"] if k.endswith(".safetensors"))[0]


def sha256(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_symlink_into_model_dir_is_served_exact_bytes(node, model_source):
    root, manifest, _ = model_source
    shard = first_shard(manifest)
    want = sha256(root / "models" / "m1" / shard)
    link = node.tmp / "elsewhere" / "shard.safetensors"
    code = f"""
import hashlib, os
d = os.environ["MODEL_DIR"]
os.makedirs({str(link.parent)!r}, exist_ok=True)
os.symlink(os.path.join(d, {shard!r}), {str(link)!r})
print(hashlib.sha256(open({str(link)!r}, "rb").read()).hexdigest())
"""
    out = node.python(code)
    assert out.stdout.decode().strip() == want, out.stderr
    # A shell tool through the same link, in another process.
    out = node.run(["sha256sum", str(link)], role="2")
    assert out.stdout.decode().split()[0] == want, out.stderr
    # Without the hook the link shows what is really on disk: the placeholder's zeros.
    out = node.run(["sha256sum", str(link)], role=None)
    assert out.stdout.decode().split()[0] != want


def test_numpy_memmap_r_plus_fails_instead_of_zeros(node, model_source):
    root, manifest, _ = model_source
    shard = first_shard(manifest)
    want = sha256(root / "models" / "m1" / shard)
    code = f"""
import errno, hashlib, os
import numpy as np
p = os.path.join(os.environ["MODEL_DIR"], {shard!r})
try:
    m = np.memmap(p, mode="r+", dtype=np.uint8)
    print("opened", int(m[:4096].sum()))
except OSError as e:
    print(errno.errorcode[e.errno])
m = np.memmap(p, mode="r", dtype=np.uint8)
print(hashlib.sha256(m.tobytes()).hexdigest())
"""
    out = node.python(code)
    lines = out.stdout.decode().split()
    assert lines == ["EROFS", want], out.stderr
    assert "opening it for writing fails with EROFS" in node.log_text()
    # The placeholder on disk is untouched: still sparse, still its size.
    st = (node.model_dir / shard).stat()
    assert st.st_size == manifest["files"][shard]["size"]
    assert st.st_blocks == 0
