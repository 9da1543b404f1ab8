"""moto (a third-party S3 server) as the store behind the agent and the hook:
SigV4 signing, path-style addressing, exact bytes through safetensors."""
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import Node, free_port, wait_port


@pytest.fixture(scope="module")
def moto(model_source):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3
    from botocore.config import Config
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="ak",
                      aws_secret_access_key="sk", config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket="motobucket")
    src = model_source[0] / "models" / "m1"
    for name in sorted(os.listdir(src)):
        s3.upload_file(str(src / name), "motobucket", f"llm/{name}")
    # Hostile keys: they must be rejected by the agent, never written outside MODEL_DIR.
    s3.put_object(Bucket="motobucket", Key="llm/../escape.txt", Body=b"evil")
    s3.put_object(Bucket="motobucket", Key="llm/sub/../../escape2.txt", Body=b"evil")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


def test_safetensors_through_preload_with_moto(tmp_path, moto, model_source):
    _, manifest, manifest_path = model_source
    node = Node(tmp_path, None, oss_path="s3://motobucket/llm/", OSS_ENDPOINT=moto, OSS_REGION="us-east-1",
                OSS_ACCESS_KEY_ID="ak", OSS_ACCESS_KEY_SECRET="sk")
    try:
        code = f"""
import glob, hashlib, json, os
from safetensors import safe_open
m = json.load(open({str(manifest_path)!r}))
d = os.environ["MODEL_DIR"]
n = 0
for shard in sorted(glob.glob(d + "/*.safetensors")):
    with safe_open(shard, framework="np") as f:
        for k in f.keys():
            assert hashlib.sha256(f.get_tensor(k).tobytes()).hexdigest() == m["tensors"][k]["sha256"], k
            n += 1
for name, f in m["files"].items():
    assert hashlib.sha256(open(os.path.join(d, name), "rb").read()).hexdigest() == f["sha256"], name
print(n)
"""
        out = node.python(code)
        assert int(out.stdout) == len(manifest["tensors"]), out.stderr
        assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "escape2.txt").exists()
        assert "escape" in node.log_text(), "rejected keys must be logged"
    finally:
        node.stop_agent()
