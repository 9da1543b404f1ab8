"""The credential chain and TLS trust through the real binaries: `ossc serve-store`
over HTTPS with a private CA, credentials only in the vendor's JSON credentials
file, and both `ossc cp` and the agent behind the hook loading byte-exact."""
import datetime
import hashlib
import json
import os
import subprocess

import pytest

from conftest import AK, OSSC_BIN, REGION, SK, Node, free_port, wait_port


def make_ca_and_server_cert(directory):
    """A private CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ossc test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def https_store(model_source, tmp_path_factory):
    pki = make_ca_and_server_cert(tmp_path_factory.mktemp("pki"))
    port = free_port()
    proc = subprocess.Popen([OSSC_BIN, "serve-store", "--root", model_source[0], "--addr", f"127.0.0.1:{port}",
                             "--region", REGION, "--access-key-id", AK, "--access-key-secret", SK,
                             "--tls-cert", pki["cert"], "--tls-key", pki["key"]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    yield f"https://127.0.0.1:{port}", pki
    proc.terminate()
    proc.wait(timeout=10)


def credentials_file(directory, key_id=AK, secret=SK):
    path = directory / "credentials"
    path.write_text(json.dumps({"AccessKeyId": key_id, "AccessKeySecret": secret,
                                "SecurityToken": "", "Expiration": ""}))
    return path


def chain_env(endpoint, **extra):
    """An environment with no OSS_ACCESS_KEY_*: credentials come from the chain."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_CLOUD_", "AWS_"))}
    env.update({"OSS_ENDPOINT": endpoint, "OSS_REGION": REGION})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def sha256_file(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cp_over_https_with_the_credentials_file(https_store, model_source, tmp_path):
    endpoint, pki = https_store
    _, manifest, _ = model_source
    creds = credentials_file(tmp_path)
    dest = tmp_path / "out"
    ok = subprocess.run([OSSC_BIN, "cp", "oss://models/m1/", dest, "--quiet"], capture_output=True, text=True,
                        timeout=300, env=chain_env(endpoint, OSS_CONNECTOR_CREDENTIALS_FILE=creds,
                                                   OSS_CONNECTOR_CA_FILE=pki["ca"]))
    assert ok.returncode == 0, ok.stderr
    for name, meta in manifest["files"].items():
        assert sha256_file(dest / name) == meta["sha256"], name

    untrusted = subprocess.run([OSSC_BIN, "ls", "oss://models/m1/"], capture_output=True, text=True, timeout=60,
                               env=chain_env(endpoint, OSS_CONNECTOR_CREDENTIALS_FILE=creds))
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr and "UnknownIssuer" in untrusted.stderr, untrusted.stderr

    wrong = subprocess.run([OSSC_BIN, "ls", "oss://models/m1/"], capture_output=True, text=True, timeout=60,
                           env=chain_env(endpoint, OSS_CONNECTOR_CREDENTIALS_FILE=credentials_file(tmp_path, "nope"),
                                         OSS_CONNECTOR_CA_FILE=pki["ca"]))
    assert wrong.returncode != 0
    assert "InvalidAccessKeyId" in wrong.stderr, wrong.stderr
    assert SK not in wrong.stderr


def test_agent_loads_over_https_with_the_credentials_file(https_store, model_source, tmp_path):
    endpoint, pki = https_store
    _, manifest, _ = model_source
    node = Node(tmp_path, None, OSS_ENDPOINT=endpoint, OSS_CONNECTOR_CREDENTIALS_FILE=credentials_file(tmp_path),
                OSS_CONNECTOR_CA_FILE=pki["ca"])
    del node.env["OSS_ACCESS_KEY_ID"], node.env["OSS_ACCESS_KEY_SECRET"]
    try:
        shards = sorted(k for k in manifest["files"] if k.endswith(".safetensors"))
        code = ("import hashlib, json, sys\n"
                f"names = {shards!r}\n"
                f"print(json.dumps({{n: hashlib.sha256(open({str(node.model_dir)!r} + '/' + n, 'rb').read())"
                ".hexdigest() for n in names}))\n")
        out = node.python(code, text=True)
        got = json.loads(out.stdout)
        assert got == {n: manifest["files"][n]["sha256"] for n in shards}, out.stderr
    finally:
        node.stop_agent()
