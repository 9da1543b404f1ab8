"""Seeds a running moto S3 server for core/tests/client_vs_moto.rs.

usage: moto_seed.py ENDPOINT BUCKET OUT_DIR
Creates BUCKET, uploads a multi-MB object, awkward keys, 1050 small keys and
an object with a SHA-256 additional checksum (`checks/sha256.bin`),
and writes every uploaded body under OUT_DIR (same relative paths) so the Rust
test can compare full content.
"""
import os
import random
import sys

import boto3
from botocore.config import Config

endpoint, bucket, out = sys.argv[1:4]
s3 = boto3.client(
    "s3", endpoint_url=endpoint, region_name="us-east-1",
    aws_access_key_id="moto-ak", aws_secret_access_key="moto-sk",
    config=Config(s3={"addressing_style": "path"}),
)
s3.create_bucket(Bucket=bucket)
rnd = random.Random(1234)
objects = {
    "model/weights.bin": rnd.randbytes(9 * 1024 * 1024 + 12345),
    "model/config.json": b'{"model_type": "llama"}',
    "model/dir with space/plus+sign ü.txt": b"awkward key",
    "model/empty.txt": b"",
}
for i in range(1050):
    objects[f"many/key-{i:05d}"] = f"{i}".encode()
for key, body in objects.items():
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    path = os.path.join(out, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(body)
# An object uploaded with an S3 additional checksum (SHA-256, full object).
body = rnd.randbytes(3 * 1024 * 1024 + 7)
s3.put_object(Bucket=bucket, Key="checks/sha256.bin", Body=body, ChecksumAlgorithm="SHA256")
path = os.path.join(out, "checks/sha256.bin")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "wb") as f:
    f.write(body)
print(len(objects) + 1)
