"""Static checks of the Kubernetes manifests (deploy/kubernetes) and the container image
(deploy/container) against the Rust sources they configure.

Nothing here needs a cluster, Docker or the built binaries: every YAML document is parsed with
yaml.safe_load_all, and each property is checked against what the code actually reads (env var
names, flags, the default peer port, package names), so renaming a variable or a flag in the Rust
code, or a typo in a manifest, fails here instead of in someone's cluster.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy/kubernetes"
VENDOR_STYLE = K8S / "vendor-style"
DOCKERFILE = REPO / "deploy/container/Dockerfile"
DOCKERFILE_APP = REPO / "deploy/container/Dockerfile.app"
DOCKERIGNORE = REPO / "deploy/container/Dockerfile.dockerignore"

# Sources whose string literals count as "read by the code". demo.rs only sets variables for
# the processes it starts, and unit tests set whatever they like, so neither counts.
READER_DIRS = ["core/src", "peer/src", "preload/src"]
NOT_READERS = {"peer/src/cli/demo.rs"}
STORE_CREDENTIALS = {
    "OSS_ACCESS_KEY_ID",
    "OSS_ACCESS_KEY_SECRET",
    "OSS_SESSION_TOKEN",
    "OSS_CONNECTOR_CLUSTER_SECRET",
}
OSSC_IMAGE = "ossc"


# ---------------------------------------------------------------------------------------------
# loading


def _docs():
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    out.append((path, doc))
    return out


DOCS = _docs()


def objects(kind):
    return [d for _, d in DOCS if d.get("kind") == kind]


def one(kind, name=None):
    found = [d for d in objects(kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}"
    return found[0]


def daemonset():
    return one("DaemonSet", "ossc-peer")


def app():
    return one("Deployment", "vllm-ossc-example")


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def all_containers(spec):
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def container(spec, name):
    found = [c for c in all_containers(spec) if c["name"] == name]
    assert len(found) == 1, f"no single container {name!r}"
    return found[0]


def ossc_main():
    return container(pod_spec(daemonset()), "ossc")


def app_main():
    return container(pod_spec(app()), "vllm")


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def env_value(c, name):
    e = env_of(c).get(name)
    assert e is not None, f"container {c['name']} does not set {name}"
    assert "value" in e, f"{name} on {c['name']} is not a literal value"
    return e["value"]


def image_name(image):
    """`registry/ossc:tag` -> `registry/ossc` (a port in the registry host is kept)."""
    last = image.rsplit("/", 1)[-1]
    return image[: len(image) - len(last)] + last.split(":", 1)[0].split("@", 1)[0]


def is_ossc(c):
    return image_name(c["image"]).rsplit("/", 1)[-1] == OSSC_IMAGE


def host_path_volumes(spec):
    return {v["name"]: v["hostPath"] for v in spec.get("volumes", []) if "hostPath" in v}


def mount_of_volume(c, volume):
    mounts = [m for m in c.get("volumeMounts", []) if m["name"] == volume]
    assert len(mounts) == 1, f"{c['name']} mounts volume {volume} {len(mounts)} times"
    return mounts[0]


def under(path, directory):
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# ---------------------------------------------------------------------------------------------
# the Rust side


def _strip_tests(text):
    # Unit tests live at the end of each file, after `#[cfg(test)] mod tests`.
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\b", text)
    return text[: m.start()] if m else text


def rust_reader_text():
    parts = []
    for d in READER_DIRS:
        for p in sorted((REPO / d).rglob("*.rs")):
            if str(p.relative_to(REPO)) in NOT_READERS:
                continue
            parts.append(_strip_tests(p.read_text()))
    return "\n".join(parts)


RUST = rust_reader_text()


def rust_reads(name):
    # `"NAME"` also matches C-string literals (`c"NAME"`) and clap's `env = "NAME"`.
    return f'"{name}"' in RUST


def rust_const(path, name):
    text = (REPO / path).read_text()
    m = re.search(rf"\bconst\s+{name}\s*:\s*\w+\s*=\s*([0-9_]+)\s*;", text)
    assert m, f"{name} not found in {path}"
    return int(m.group(1).replace("_", ""))


def struct_body(path, struct):
    text = (REPO / path).read_text()
    m = re.search(rf"pub struct {struct}\s*\{{(.*?)\n\}}", text, re.S)
    assert m, f"struct {struct} not found in {path}"
    return m.group(1)


def clap_fields(body):
    """{kebab-case flag: is_bool} for every `#[arg(long ...)] pub field: Type` in `body`."""
    flags, attrs = {}, []
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("#[arg("):
            attrs.append(line)
            continue
        m = re.match(r"(?:pub\s+)?(\w+)\s*:\s*(.+?),?$", line)
        if m and not line.startswith("//"):
            if any(re.search(r"\blong\b", a) for a in attrs):
                flags["--" + m.group(1).replace("_", "-")] = m.group(2).strip() == "bool"
            attrs = []
    return flags


def peer_flags():
    """`ossc peer`'s flags: PeerArgs' own and those of the NodeArgs it flattens."""
    body = struct_body("peer/src/cli/peer_daemon.rs", "PeerArgs")
    assert re.search(r"#\[command\(flatten\)\]\s*pub\s+\w+\s*:\s*NodeArgs,", body), body
    return clap_fields(body) | clap_fields(struct_body("peer/src/cli/node.rs", "NodeArgs"))


def status_flags():
    text = (REPO / "peer/src/bin/ossc.rs").read_text()
    m = re.search(r"\n\s*Status\s*\{(.*?)\n\s*\},", text, re.S)
    assert m, "no `Status { .. }` subcommand in peer/src/bin/ossc.rs"
    return clap_fields(m.group(1))


def cargo_section(path, section):
    text = (REPO / path).read_text()
    m = re.search(rf"^\[{re.escape(section)}\]\n(.*?)(?=^\[|\Z)", text, re.S | re.M)
    assert m, f"[{section}] not in {path}"
    name = re.search(r'^name\s*=\s*"([^"]+)"', m.group(1), re.M)
    assert name, f"no name in [{section}] of {path}"
    return name.group(1)


def dockerfile_instructions(path=DOCKERFILE):
    """(INSTRUCTION, text) pairs with comments dropped and continuation lines joined."""
    out, cur = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not cur and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


# ---------------------------------------------------------------------------------------------
# the manifests as a whole


def test_every_document_is_a_named_kubernetes_object():
    assert DOCS, "no YAML documents under deploy/kubernetes"
    for path, doc in DOCS:
        if path.name == "kustomization.yaml":
            continue
        assert doc.get("apiVersion") and doc.get("kind"), path
        assert doc.get("metadata", {}).get("name"), path


def test_daemon_objects_live_in_the_namespace_the_manifests_create():
    ns = one("Namespace")["metadata"]["name"]
    assert ns == "ossc-system"
    for path, doc in DOCS:
        if path.parent == K8S and doc.get("kind") not in ("Namespace", "Kustomization"):
            assert doc["metadata"].get("namespace") == ns, f"{path.name}: not in {ns}"


def test_kustomization_lists_every_yaml_file_in_the_directory():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kust["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed), "a resource is listed twice"
    # `kustomize edit set image ossc=...` must retarget every ossc container.
    names = {i["name"] for i in kust.get("images", [])}
    for c in all_containers(pod_spec(daemonset())):
        assert image_name(c["image"]) in names, f"{c['image']} is not covered by images:"


def test_kustomize_builds_the_directory():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: kustomize build not checked")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out.stdout) if d)
    assert kinds == sorted(
        d["kind"] for p, d in DOCS if p.parent == K8S and p.name != "kustomization.yaml"
    )


def test_every_reference_resolves():
    """Mounts name defined volumes; the Secrets, ConfigMaps and keys the workloads name exist."""
    for workload in [daemonset(), app(), vendor_app()]:
        spec = pod_spec(workload)
        volumes = [v["name"] for v in spec.get("volumes", [])]
        assert len(set(volumes)) == len(volumes), "duplicate volume names"
        for c in all_containers(spec):
            paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
            assert len(set(paths)) == len(paths), f"{c['name']}: two mounts at one path"
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{c['name']} mounts undefined volume {m['name']}"
    secrets = {s["metadata"]["name"]: {**s.get("stringData", {}), **s.get("data", {})}
               for s in objects("Secret")}
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in objects("ConfigMap")}
    for spec in [pod_spec(daemonset()), pod_spec(vendor_app())]:
        for c in all_containers(spec):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], {}), f"{e['name']}: {ref}"
        for v in spec["volumes"]:
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps


# ---------------------------------------------------------------------------------------------
# the daemon


def test_daemon_env_names_are_read_by_the_rust_code():
    for c in all_containers(pod_spec(daemonset())):
        if not is_ossc(c) or not c.get("env"):
            continue
        names = [e["name"] for e in c["env"]]
        assert len(set(names)) == len(names), f"{c['name']}: a variable is set twice"
        expansions = set()
        for text in [e.get("value", "") for e in c["env"]] + c.get("args", []):
            expansions |= set(re.findall(r"\$\((\w+)\)", text))
        for e in c["env"]:
            name = e["name"]
            if rust_reads(name):
                continue
            # Helpers such as POD_IP: downward-API values only used inside $(...) expansions.
            assert "fieldRef" in e.get("valueFrom", {}) and name in expansions, (
                f"{c['name']} sets {name}, which no Rust source reads (renamed?)"
            )
        for name in expansions:
            assert name in names, f"$({name}) expands a variable the container does not set"


def test_peer_args_are_flags_of_ossc_peer():
    text = (REPO / "peer/src/bin/ossc.rs").read_text()
    assert re.search(r"^\s*Peer\(\s*ossc_peer::cli::peer_daemon::PeerArgs\s*\)", text, re.M)
    flags = peer_flags()
    assert "--secret-file" in flags and "--expire-time-sec" in flags, flags
    c = ossc_main()
    assert "command" not in c, "the image's ENTRYPOINT (/usr/bin/ossc) must stay in charge"
    args = c["args"]
    assert args[0] == "peer"
    i = 1
    while i < len(args):
        flag = args[i]
        assert flag.startswith("--"), f"stray argument {flag!r}"
        name, eq, _ = flag.partition("=")
        assert name in flags, f"`ossc peer` has no flag {name} (PeerArgs: {sorted(flags)})"
        if flags[name] or eq:
            i += 1
        else:
            assert i + 1 < len(args) and not args[i + 1].startswith("--"), f"{name} needs a value"
            i += 2
    expire = args[args.index("--expire-time-sec") + 1]
    assert int(expire) == 0, "the daemon keeps the model (see deploy/README.md)"


def test_the_cluster_secret_reaches_the_daemon_only_as_a_file():
    spec = pod_spec(daemonset())
    c = ossc_main()
    assert "OSS_CONNECTOR_CLUSTER_SECRET" not in env_of(c)
    args = c["args"]
    path = args[args.index("--secret-file") + 1]
    # The file lies inside a mounted volume backed by the cluster Secret, under an existing key.
    mounts = [m for m in c["volumeMounts"] if under(path, m["mountPath"])]
    assert len(mounts) == 1, f"--secret-file {path} is not inside exactly one mount"
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[0]["name"])
    assert "secret" in volume, f"{path} is not on a Secret volume"
    assert mounts[0].get("readOnly") is True
    secret = one("Secret", volume["secret"]["secretName"])
    data = {**secret.get("stringData", {}), **secret.get("data", {})}
    key = path[len(mounts[0]["mountPath"]):].strip("/")
    items = {i["path"]: i["key"] for i in volume["secret"].get("items", [])}
    assert items.get(key, key) in data, f"Secret has no key for {key}"
    # Not readable by other users in the pod; readable by the daemon's group.
    mode = volume["secret"].get("defaultMode", 0o644)
    assert mode & 0o007 == 0, f"secret file mode {mode:o} is world-readable"
    assert spec["securityContext"].get("fsGroup") == c["securityContext"]["runAsGroup"]
    assert mode & 0o040, "the daemon's group cannot read the secret file"
    # The template's placeholder is too short to be accepted: an unedited template makes the
    # daemon refuse to start instead of using a well-known secret.
    placeholder = data[items.get(key, key)]
    assert len(placeholder.strip()) < rust_const("peer/src/swarm/auth.rs", "MIN_SECRET_CHARS")
    # The value itself appears in no command line and no env var of any workload.
    for workload in [daemonset(), app()]:
        for cc in all_containers(pod_spec(workload)):
            literal = " ".join(cc.get("command", []) + cc.get("args", []))
            literal += " ".join(e.get("value", "") for e in cc.get("env", []))
            assert placeholder not in literal


def test_the_service_exposes_the_default_peer_port_over_tcp_and_udp():
    port = rust_const("peer/src/swarm/mod.rs", "DEFAULT_PORT")
    svc = one("Service", "ossc-peer")
    assert svc["spec"]["clusterIP"] == "None", "must be headless: DNS returns every pod"
    assert svc["spec"]["publishNotReadyAddresses"] is True, "peers must see not-ready pods"
    by_proto = {p.get("protocol", "TCP"): p for p in svc["spec"]["ports"] if p["port"] == port}
    assert set(by_proto) == {"TCP", "UDP"}, "gRPC on TCP and QUIC on UDP at the same port"
    for p in by_proto.values():
        assert p.get("targetPort", port) == port
    c = ossc_main()
    container_ports = {(p["containerPort"], p.get("protocol", "TCP")) for p in c["ports"]}
    assert {(port, "TCP"), (port, "UDP")} <= container_ports
    ns = svc["metadata"]["namespace"]
    name = svc["metadata"]["name"]
    assert env_value(c, "OSS_CONNECTOR_PEERS") == f"{name}.{ns}.svc.cluster.local:{port}"
    assert env_value(c, "OSS_CONNECTOR_PEER_LISTEN").rsplit(":", 1)[1] == str(port)
    assert env_value(c, "OSS_CONNECTOR_PEER_ADVERTISE") == f"$(POD_IP):{port}"
    pod_ip = env_of(c)["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert pod_ip == "status.podIP"
    transport = env_value(c, "OSS_CONNECTOR_PEER_TRANSPORT")
    assert transport in ("framed", "grpc", "quic")
    if transport == "framed":
        # The framed transport listens on TCP at the peer port + 1 (framed_addr in Rust).
        framed = port + rust_const("peer/src/swarm/transport/framed/mod.rs", "PORT_OFFSET")
        svc_tcp = {p["port"] for p in svc["spec"]["ports"] if p.get("protocol", "TCP") == "TCP"}
        assert framed in svc_tcp, "the Service must expose the framed port over TCP"
        assert (framed, "TCP") in container_ports


def test_metrics_port_agrees_everywhere():
    c = ossc_main()
    port = int(env_value(c, "OSS_CONNECTOR_METRICS_LISTEN").rsplit(":", 1)[1])
    svc_ports = {p["name"]: p["port"] for p in one("Service", "ossc-peer")["spec"]["ports"]}
    assert svc_ports["metrics"] == port
    assert ("metrics", port) in {(p["name"], p["containerPort"]) for p in c["ports"]}
    ann = daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) == port
    assert ann["prometheus.io/path"] == "/metrics"
    assert "/metrics" in (REPO / "peer/src/prometheus.rs").read_text()


def test_the_service_selects_the_daemonset_pods():
    svc = one("Service", "ossc-peer")
    ds = daemonset()
    labels = ds["spec"]["template"]["metadata"]["labels"]
    selector = svc["spec"]["selector"]
    assert selector and selector.items() <= labels.items()
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["metadata"]["namespace"] == ds["metadata"]["namespace"]


def test_probes_use_real_status_flags_and_fields():
    flags = status_flags()
    assert {"--socket", "--json"} <= set(flags), flags
    c = ossc_main()
    socket = env_value(c, "CONNECTOR_UDS_PATH")
    seen = 0
    for probe in ("readinessProbe", "livenessProbe"):
        cmd = c[probe].get("exec", {}).get("command")
        if not cmd:
            continue
        line = cmd[-1] if cmd[0] in ("/bin/sh", "sh") else shlex.join(cmd)
        words = shlex.split(line.split("|")[0])
        assert words[0] in ("/usr/bin/ossc", "ossc") and words[1] == "status"
        seen += 1
        for w in words[2:]:
            if w.startswith("--"):
                assert w in flags, f"`ossc status` has no flag {w}"
        if "--socket" in words:
            value = words[words.index("--socket") + 1]
            assert value in (socket, "$CONNECTOR_UDS_PATH"), f"{probe} asks another socket"
        if "grep" in line:
            # The readiness grep relies on the STATUS field `mirror` being "ready".
            agent = (REPO / "peer/src/agent/mod.rs").read_text()
            assert '"mirror": mirror_state' in agent and '"ready".to_string()' in agent
            assert '"mirror": "ready"' in line
    assert seen, "no probe asks the agent (`ossc status`)"


def test_config_file_and_writable_directories():
    c = ossc_main()
    spec = pod_spec(daemonset())
    cm = one("ConfigMap", "ossc-config")
    config = json.loads(cm["data"]["config.json"])
    # Every key is one docs/configuration.md documents (a misspelt key is silently ignored).
    doc = (REPO / "docs/configuration.md").read_text()

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    for key in leaves(config):
        assert f"`{key}`" in doc, f"config key {key} is not documented"
    # OSS_CONNECTOR_CONFIG names the file the ConfigMap volume provides.
    path = env_value(c, "OSS_CONNECTOR_CONFIG")
    vol = next(v for v in spec["volumes"] if v.get("configMap", {}).get("name") == "ossc-config")
    assert path == mount_of_volume(c, vol["name"])["mountPath"].rstrip("/") + "/config.json"
    # With a read-only root filesystem the audit log's directory must be a writable volume.
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    audit_dir = os.path.dirname(config["auditPath"])
    writable = [m for m in c["volumeMounts"] if m["mountPath"] == audit_dir]
    assert writable and not writable[0].get("readOnly"), f"{audit_dir} is not mounted writable"
    assert "--log-stderr" in c["args"], "logPath's directory is not writable"


def test_the_host_directory_is_prepared_for_the_daemon_and_the_apps():
    spec = pod_spec(daemonset())
    c = ossc_main()
    (host_vol, host), = host_path_volumes(spec).items()
    root = mount_of_volume(c, host_vol)["mountPath"]
    model_dir = env_value(c, "MODEL_DIR")
    socket = env_value(c, "CONNECTOR_UDS_PATH")
    assert under(model_dir, root) and under(socket, root)
    init = [i for i in spec["initContainers"] if is_ossc(i)]
    assert len(init) == 1
    script = "\n".join(init[0].get("args", []))
    # The subdirectories are chowned to the uid:gid the daemon runs as.
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    owner = f"{sc['runAsUser']}:{sc['runAsGroup']}"
    chowns = re.findall(r"chown\s+(?:-R\s+)?(\S+)\s+(.+)", script)
    owned = {p for o, paths in chowns if o == owner for p in paths.split()}
    assert os.path.dirname(socket) in owned and model_dir in owned, script
    # The library is copied from the image's install path and renamed into place.
    assert "/usr/lib/ossc/libossc_preload.so" in script
    m = re.search(r"mv\s+-f\s+\S+\s+(\S+libossc_preload\.so)\s*$", script, re.M)
    assert m and under(m.group(1), root), "the library is not renamed into the host directory"
    # OSS_CONNECTOR_SOCKET_MODE lets an application with another uid and gid connect.
    mode = int(env_value(c, "OSS_CONNECTOR_SOCKET_MODE"), 8)
    app_sc = {**pod_spec(app()).get("securityContext", {}), **app_main().get("securityContext", {})}
    if app_sc.get("runAsUser") != sc["runAsUser"] and app_sc.get("runAsGroup") != sc["runAsGroup"]:
        assert mode & 0o002, f"socket mode {mode:o}: other users cannot connect"


# ---------------------------------------------------------------------------------------------
# the application


def test_the_app_attaches_to_the_daemon_at_identical_paths():
    ds_spec = pod_spec(daemonset())
    daemon = ossc_main()
    app_spec = pod_spec(app())
    vllm = app_main()
    (ds_vol, ds_host), = host_path_volumes(ds_spec).items()
    (app_vol, app_host), = host_path_volumes(app_spec).items()
    assert app_host["path"] == ds_host["path"]
    root = mount_of_volume(daemon, ds_vol)["mountPath"]
    app_mount = mount_of_volume(vllm, app_vol)
    assert app_mount["mountPath"] == root, "the hook compares paths: mount at the same path"
    assert app_mount.get("readOnly") is True
    for name in ("CONNECTOR_UDS_PATH", "MODEL_DIR"):
        assert env_value(vllm, name) == env_value(daemon, name), name
    assert env_value(vllm, "ENABLE_CONNECTOR") == "2"
    # LD_PRELOAD is the file the DaemonSet's initContainer installs, and the Rust code reads the
    # other two variables.
    init_script = "\n".join(
        "\n".join(i.get("args", [])) for i in ds_spec["initContainers"] if is_ossc(i)
    )
    lib = env_value(vllm, "LD_PRELOAD")
    assert re.search(rf"mv\s+-f\s+\S+\s+{re.escape(lib)}\s*$", init_script, re.M), lib
    preload = (REPO / "preload/src/state.rs").read_text()
    for name in ("ENABLE_CONNECTOR", "CONNECTOR_UDS_PATH", "MODEL_DIR"):
        assert f'c"{name}"' in preload, f"the hook does not read {name}"
    # Any $(VAR) in the args is one the container sets (vLLM gets MODEL_DIR as its model).
    for a in vllm.get("args", []):
        for name in re.findall(r"\$\((\w+)\)", a):
            assert name in env_of(vllm)


def test_the_app_runs_as_non_root():
    spec = pod_spec(app())
    for c in all_containers(spec):
        sc = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
        assert sc.get("runAsNonRoot") is True, c["name"]
        assert sc.get("runAsUser", 0) != 0, c["name"]


def test_the_app_needs_no_store_credentials():
    spec = pod_spec(app())
    for c in all_containers(spec):
        assert not c.get("envFrom"), f"{c['name']}: envFrom could carry credentials"
        for e in c.get("env", []):
            assert e["name"] not in STORE_CREDENTIALS, f"{c['name']} sets {e['name']}"
            assert "secretKeyRef" not in e.get("valueFrom", {}), f"{c['name']}: {e['name']}"
    for v in spec.get("volumes", []):
        assert "secret" not in v and "projected" not in v, f"volume {v['name']}"


# ---------------------------------------------------------------------------------------------
# the container image


def test_dockerfile_builds_with_the_package_script_on_the_glibc_baseline():
    ins = dockerfile_instructions()
    froms = [t for i, t in ins if i == "FROM"]
    assert len(froms) >= 2, "multi-stage: build and runtime"
    runs = " ".join(t for i, t in ins if i == "RUN")
    # scripts/package.sh builds both artefacts against glibc 2.17 and checks it; the image
    # ships the release build the packages ship.
    build = re.search(r"bash scripts/package\.sh ([^&;]*)", runs)
    assert build, "the build stage runs scripts/package.sh"
    assert "--install-root /out" in build.group(1) and "--profile release" in build.group(1)
    package_sh = (REPO / "scripts/package.sh").read_text()
    assert "GLIBC_BASELINE=2.17" in package_sh and "cargo zigbuild" in package_sh
    packages = set(re.findall(r"-p\s+([\w-]+)", package_sh))
    assert {
        cargo_section("peer/Cargo.toml", "package"),
        cargo_section("preload/Cargo.toml", "package"),
    } <= packages
    reqs = (REPO / "scripts/requirements-test.txt").read_text()
    for tool in ("ziglang", "cargo-zigbuild"):
        assert re.search(rf"^{tool}==", reqs, re.M) and tool in runs, tool


def test_dockerfile_installs_the_layout_the_examples_assume():
    ins = dockerfile_instructions()
    binary = cargo_section("peer/Cargo.toml", "[bin]")
    lib = "lib" + cargo_section("preload/Cargo.toml", "lib") + ".so"
    assert (binary, lib) == ("ossc", "libossc_preload.so")
    copies = [t for i, t in ins if i == "COPY" and t.startswith("--from=")]
    dests = {t.split()[-1]: t.split()[-2] for t in copies}
    # Sources: the packages' install tree that package.sh lays out under /out.
    assert dests.get(f"/usr/bin/{binary}") == f"/out/usr/local/bin/{binary}"
    assert dests.get(f"/usr/lib/ossc/{lib}") == f"/out/usr/local/lib/{lib}"
    entry = [t for i, t in ins if i == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == [f"/usr/bin/{binary}"]
    # The runtime stage's default user is the uid the DaemonSet runs the daemon as.
    user = [t for i, t in ins if i == "USER"][-1].split(":")
    sc = ossc_main()["securityContext"]
    assert [int(x) for x in user] == [sc["runAsUser"], sc["runAsGroup"]]


def test_dockerignore_keeps_build_outputs_out_of_the_context():
    patterns = {
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"target", ".venv", ".bench"} <= patterns


# ---------------------------------------------------------------------------------------------
# schema validation: kubernetes-validate bundles the Kubernetes OpenAPI schemas (no network, no
# cluster). Strict mode rejects unknown fields, so a misspelt or misplaced key fails here.

# The oldest and the newest minor versions the manifests are checked against.
K8S_VERSIONS = ["1.28.0", "1.37.0"]


def _kubernetes_validate():
    # Imported here so that a missing package fails these tests only, with a clear message.
    try:
        import kubernetes_validate
    except ImportError as e:  # pragma: no cover - setup-env.sh installs it
        pytest.fail(f"kubernetes-validate is not installed ({e}): run scripts/setup-env.sh")
    return kubernetes_validate


def schema_errors(doc, version):
    kv = _kubernetes_validate()
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as e:
        return str(e).splitlines()[0]
    return None


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_passes_the_kubernetes_schema(version):
    checked = 0
    for path, doc in DOCS:
        if doc.get("kind") == "Kustomization":
            continue  # kustomize's own file, not an API object (built by kubectl kustomize)
        err = schema_errors(doc, version)
        assert err is None, f"{path.relative_to(REPO)}: {doc['kind']}: {err}"
        checked += 1
    kinds = {d["kind"] for _, d in DOCS}
    assert {"DaemonSet", "Deployment", "ConfigMap", "Secret", "Service"} <= kinds
    assert checked == len([d for _, d in DOCS if d.get("kind") != "Kustomization"])


def test_the_schema_check_rejects_broken_manifests():
    """The validator is not a rubber stamp: the mistakes a hand edit makes are caught."""
    import copy

    deployment = vendor_app()
    assert schema_errors(deployment, K8S_VERSIONS[-1]) is None
    misspelt = copy.deepcopy(deployment)
    c = pod_spec(misspelt)["containers"][0]
    c["volumeMount"] = c.pop("volumeMounts")
    assert "volumeMount" in (schema_errors(misspelt, K8S_VERSIONS[-1]) or "")
    wrong_type = copy.deepcopy(deployment)
    env_of(pod_spec(wrong_type)["containers"][0])["ENABLE_CONNECTOR"]["value"] = 1
    assert schema_errors(wrong_type, K8S_VERSIONS[-1]) is not None
    no_containers = copy.deepcopy(deployment)
    del pod_spec(no_containers)["containers"]
    assert schema_errors(no_containers, K8S_VERSIONS[-1]) is not None


# ---------------------------------------------------------------------------------------------
# vendor style: the connector inside the application image, the server as main process

PACKAGE_PRELOAD = "/usr/local/lib/libossc_preload.so"
PACKAGE_AGENT = "/usr/local/bin/ossc"


def vendor_docs():
    return [d for p, d in DOCS if p.parent == VENDOR_STYLE]


def vendor_one(kind):
    found = [d for d in vendor_docs() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in {VENDOR_STYLE}, found {len(found)}"
    return found[0]


def vendor_app():
    return vendor_one("Deployment")


def vendor_main():
    (c,) = pod_spec(vendor_app())["containers"]
    return c


def test_vendor_style_is_the_vendors_sample_shape():
    c = vendor_main()
    assert env_value(c, "LD_PRELOAD") == PACKAGE_PRELOAD
    assert env_value(c, "ENABLE_CONNECTOR") == "1", "the server is the main process"
    for name in ("OSS_ENDPOINT", "OSS_PATH", "MODEL_DIR"):
        assert env_value(c, name), name
        assert rust_reads(name), f"no Rust source reads {name}"
    oss_path = env_value(c, "OSS_PATH")
    assert re.fullmatch(r"oss://[a-z0-9][a-z0-9-]{1,61}[a-z0-9]/", oss_path), (
        f"{oss_path}: the vendor's sample names the bucket root"
    )
    # The hook reads LD_PRELOAD's role and directory from these two, exactly as the vendor names them.
    preload = (REPO / "preload/src/state.rs").read_text()
    assert 'c"ENABLE_CONNECTOR"' in preload and 'c"MODEL_DIR"' in preload
    # The model the server loads lies below MODEL_DIR (the prefix under the bucket root).
    model_dir = env_value(c, "MODEL_DIR")
    args = c["args"]
    model = args[args.index("--model") + 1].replace("$(MODEL_DIR)", model_dir)
    assert under(model, model_dir) and model != model_dir
    # MODEL_DIR is writable (the agent mirrors the tree into it) and not shared with other pods.
    spec = pod_spec(vendor_app())
    vol = next(v for v in spec["volumes"] if v["name"] == mount_of_volume_at(c, model_dir)["name"])
    assert "emptyDir" in vol and not mount_of_volume_at(c, model_dir).get("readOnly")


def mount_of_volume_at(c, path):
    mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == path]
    assert len(mounts) == 1, f"{c['name']}: nothing mounted at {path}"
    return mounts[0]


def test_vendor_style_config_map_is_mounted_where_the_code_reads_it():
    c = vendor_main()
    spec = pod_spec(vendor_app())
    default = re.search(
        r'const DEFAULT_CONFIG_PATH: &str = "([^"]+)";', (REPO / "core/src/config/file.rs").read_text()
    )
    assert default and default.group(1) == "/etc/oss-connector/config.json"
    assert "OSS_CONNECTOR_CONFIG" not in env_of(c), "vendor style: the default path, no override"
    mount = mount_of_volume_at(c, os.path.dirname(default.group(1)))
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm_name = vol["configMap"]["name"]
    cm = vendor_one("ConfigMap")
    assert cm["metadata"]["name"] == cm_name
    config = json.loads(cm["data"]["config.json"])
    # The vendor's sample, value for value (deploy/config.json).
    assert config == json.loads((REPO / "deploy/config.json").read_text())
    # The log and audit directories are writable volumes.
    for key in ("logPath", "auditPath"):
        m = mount_of_volume_at(c, os.path.dirname(config[key]))
        assert not m.get("readOnly"), f"{key}'s directory is read-only"


def test_vendor_style_credentials_come_from_the_secret():
    c = vendor_main()
    secret = vendor_one("Secret")
    data = {**secret.get("stringData", {}), **secret.get("data", {})}
    for name in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"):
        e = env_of(c)[name]
        assert "value" not in e, f"{name} is a literal in the Deployment"
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in data, ref
        assert rust_reads(name)
    # The templates' placeholders appear nowhere else.
    text = (VENDOR_STYLE / "deployment.yaml").read_text()
    for value in data.values():
        assert value not in text


def test_vendor_style_memory_limit_holds_the_model_in_the_container():
    # The agent's memory files are charged to the application container itself.
    limits = vendor_main()["resources"]["limits"]
    assert limits["memory"].endswith("Gi") and int(limits["memory"][:-2]) >= 16


def test_dockerfile_app_installs_our_package_at_the_paths_the_deployment_names():
    ins = dockerfile_instructions(DOCKERFILE_APP)
    copies = [t for i, t in ins if i == "COPY"]
    assert any(re.match(r"ossc_\*_amd64\.deb\s", t) for t in copies), copies
    runs = " ".join(t for i, t in ins if i == "RUN")
    assert re.search(r"dpkg -i /tmp/ossc_\*_amd64\.deb", runs)
    # The image build fails unless the package put the files where the Deployment expects them.
    assert f"test -f {PACKAGE_PRELOAD}" in runs and f"test -x {PACKAGE_AGENT}" in runs
    # The hook finds the agent at ../bin/ossc relative to itself.
    assert os.path.normpath(os.path.join(os.path.dirname(PACKAGE_PRELOAD), "../bin/ossc")) == (
        PACKAGE_AGENT
    )
    spawn = (REPO / "preload/src/spawn.rs").read_text()
    assert 'dir.join("..").join("bin").join(AGENT_BIN_NAME)' in spawn
    # The image does not preload the hook into everything: the Deployment sets it per container.
    assert not any(i == "ENV" and "LD_PRELOAD" in t for i, t in ins)
    assert env_value(vendor_main(), "LD_PRELOAD") == PACKAGE_PRELOAD


# ---------------------------------------------------------------------------------------------
# the launch examples (run for real by cluster-tests/tests/netns_ray.rs and netns_sglang.rs)

EXAMPLES = REPO / "deploy/examples"


def test_example_scripts_parse_and_default_to_the_package_path():
    scripts = sorted(EXAMPLES.glob("*.sh"))
    assert {"vllm.sh", "sglang.sh", "ray-cluster.sh", "sglang-multinode.sh"} <= {
        s.name for s in scripts
    }
    for script in scripts:
        out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, f"{script.name}: {out.stderr}"
        text = script.read_text()
        assert f"LD_PRELOAD=${{OSSC_PRELOAD_LIB:-{PACKAGE_PRELOAD}}}" in text, script.name
        assert "ENABLE_CONNECTOR=1" in text, f"{script.name}: the server is the main process"
    ray = (EXAMPLES / "ray-cluster.sh").read_text()
    # Raylet strips LD_PRELOAD from workers when this is 0 (docs/deploy.md).
    assert "export RAY_LD_PRELOAD_ON_WORKERS=1" in ray and "unset RAY_JEMALLOC_LIB_PATH" in ray
    assert "--node-ip-address" in ray
