"""Ray driver for the multi-node launch test (cluster-tests/tests/netns_ray.rs).

Runs on the head node like vLLM's API server: under the hook with ENABLE_CONNECTOR=2, attached
to the agent that the node's `ray start` brought up. It reads the model's small files itself
(as vLLM reads config.json), then pins Ray tasks to every node (NodeAffinitySchedulingStrategy,
hard), each of which loads every tensor of every shard through safetensors from its own node's
MODEL_DIR and returns the SHA-256 of each tensor's bytes. The driver compares them with digests
computed from the store's own files and writes a JSON report.

    python ray_load.py PLAN.json REPORT.json

PLAN: {"address": "ip:6379", "store_model": dir, "prefix": "m1", "tasks_per_node": 2,
       "timeout_s": 120, "start_delay_s": 10, "nodes": [{"ip": ..., "env_vars": {...}}, ...]}
Every task starts loading start_delay_s after the driver submitted them (a task whose worker
started later begins at once and reports how late it was).
A node's env_vars, when not empty, go to its tasks as a Ray runtime_env (a second MODEL_DIR and
agent on the same Ray cluster); empty means the environment inherited from that node's
`ray start`, exactly as the vendor's guide sets it.

Everything this file defines is shipped to the workers by value (cloudpickle of __main__), so
the workers need nothing beyond Ray, numpy and safetensors.
"""
import hashlib
import json
import os
import sys
import time
from pathlib import Path


def hook_state(pid="self"):
    """Whether libossc_preload.so is mapped into the process, and its ENABLE_CONNECTOR."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    role = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"ENABLE_CONNECTOR=")), None)
    return {"hooked": "libossc_preload.so" in maps, "enable_connector": role}


def tensor_digests(model_dir):
    """{tensor name: sha256 of its bytes} over every *.safetensors file in model_dir."""
    from safetensors import safe_open

    out = {}
    shards = sorted(Path(model_dir).glob("*.safetensors"))
    for shard in shards:
        with safe_open(str(shard), framework="np") as f:
            for name in f.keys():
                out[name] = hashlib.sha256(f.get_tensor(name).tobytes()).hexdigest()
    return out, [s.name for s in shards]


def load_on_node(prefix, start_at):
    """A Ray task: at `start_at` (epoch seconds; every host shares this machine's clock), load
    every tensor from this node's MODEL_DIR/<prefix>."""
    import ray

    wait = start_at - time.time()
    if wait > 0:
        time.sleep(wait)
    t0 = time.time()
    model_dir = os.path.join(os.environ["MODEL_DIR"], prefix)
    digests, shards = tensor_digests(model_dir)
    return {
        "pid": os.getpid(),
        "comm": Path("/proc/self/comm").read_text().strip(),
        "node_ip": ray.util.get_node_ip_address(),
        "model_dir": model_dir,
        "socket": os.environ.get("CONNECTOR_UDS_PATH"),
        "shards": shards,
        "tensors": digests,
        "seconds": time.time() - t0,
        "late_seconds": max(0.0, -wait),
        **hook_state(),
    }


def main(plan_path, report_path):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    plan = json.loads(Path(plan_path).read_text())
    deadline = time.time() + plan["timeout_s"]
    store_model = Path(plan["store_model"])
    expected, expected_shards = tensor_digests(store_model)
    # What vLLM's API server does first: read the model's small files through the hook.
    own_dir = Path(os.environ["MODEL_DIR"]) / plan["prefix"]
    small = {}
    for name in ("config.json", "model.safetensors.index.json"):
        got = (own_dir / name).read_bytes()
        small[name] = got == (store_model / name).read_bytes()

    ray.init(address=plan["address"], logging_level="WARNING", log_to_driver=False)
    want = {n["ip"] for n in plan["nodes"]}
    while True:
        alive = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
        if want <= set(alive):
            break
        if time.time() > deadline:
            sys.exit(f"nodes {sorted(want - set(alive))} never joined (alive: {sorted(alive)})")
        time.sleep(0.2)

    task = ray.remote(num_cpus=1)(load_on_node)
    # Every task starts loading at the same moment (workers take seconds to start), so the nodes
    # fetch side by side instead of one after the other.
    start_at = time.time() + plan.get("start_delay_s", 0)
    refs = []
    for node in plan["nodes"]:
        options = {
            "scheduling_strategy": NodeAffinitySchedulingStrategy(alive[node["ip"]], soft=False)
        }
        if node.get("env_vars"):
            options["runtime_env"] = {"env_vars": node["env_vars"]}
        for _ in range(plan["tasks_per_node"]):
            refs.append((node["ip"], task.options(**options).remote(plan["prefix"], start_at)))
    t0 = time.time()
    results = ray.get([r for _, r in refs], timeout=max(1.0, deadline - time.time()))
    wall = time.time() - t0

    mismatches = []
    for (ip, _), r in zip(refs, results):
        if r["node_ip"] != ip:
            mismatches.append(f"task pinned to {ip} ran on {r['node_ip']}")
        if r["shards"] != expected_shards:
            mismatches.append(f"{ip} pid {r['pid']}: shards {r['shards']} != {expected_shards}")
        if set(r["tensors"]) != set(expected):
            mismatches.append(f"{ip} pid {r['pid']}: {len(r['tensors'])} tensors != {len(expected)}")
        for name, digest in expected.items():
            if r["tensors"].get(name) != digest:
                mismatches.append(f"{ip} pid {r['pid']}: tensor {name} differs from the store's")
    report = {
        "driver": {"pid": os.getpid(), **hook_state()},
        "small_files_match": small,
        "expected_tensors": len(expected),
        "tasks": [{k: v for k, v in r.items() if k != "tensors"} | {"tensor_count": len(r["tensors"])}
                  for r in results],
        "wall_seconds": wall,
        "mismatches": mismatches,
    }
    Path(report_path).write_text(json.dumps(report, indent=1))
    ray.shutdown()
    if mismatches or not all(small.values()):
        sys.exit(f"{len(mismatches)} mismatches, small files {small}: {mismatches[:5]}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
