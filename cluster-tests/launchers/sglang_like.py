"""A stand-in for `python -m sglang.launch_server` on several nodes, for
cluster-tests/tests/netns_sglang.rs (real SGLang needs GPUs).

It takes SGLang's multi-node flags (--model-path, --tp, --nnodes, --node-rank, --dist-init-addr)
and loads the way SGLang does: the server process on each node (the main process, started with
ENABLE_CONNECTOR=1) reads the model's config, then spawns one worker process per local TP rank
(multiprocessing "spawn", as SGLang starts its schedulers). The workers attach to the node's agent
as secondaries (ENABLE_CONNECTOR=2) and each reads its share of the tensors through safetensors:
tensor i of the sorted names belongs to global rank i % tp. Node 0 listens on --dist-init-addr,
gathers every rank's tensor digests, and checks that every tensor was read exactly once with the
bytes of the store's copy (--expect-from, test only). Verdict and report go to every node.

    python sglang_like.py --model-path DIR --tp 4 --nnodes 2 --node-rank R \
        --dist-init-addr IP:PORT --expect-from STORE_DIR --report OUT.json
"""
import argparse
import hashlib
import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path

# Bounds every wait: peers that never connect, a rank that never reports.
TIMEOUT_S = 120
MAX_MESSAGE = 64 << 20


def hook_state():
    maps = Path("/proc/self/maps").read_text()
    return {
        "pid": os.getpid(),
        "hooked": "libossc_preload.so" in maps,
        "enable_connector": os.environ.get("ENABLE_CONNECTOR"),
    }


def tensor_names(model_path):
    index = json.loads((Path(model_path) / "model.safetensors.index.json").read_text())
    return sorted(index["weight_map"]), index["weight_map"]


def digests_of(model_path, names, weight_map):
    """sha256 of each named tensor, shard by shard (in shard-name order, like SGLang)."""
    from safetensors import safe_open

    by_shard = {}
    for n in names:
        by_shard.setdefault(weight_map[n], []).append(n)
    out = {}
    for shard in sorted(by_shard):
        with safe_open(str(Path(model_path) / shard), framework="np") as f:
            for n in by_shard[shard]:
                out[n] = hashlib.sha256(f.get_tensor(n).tobytes()).hexdigest()
    return out


def worker(model_path, rank, tp, queue):
    names, weight_map = tensor_names(model_path)
    mine = [n for i, n in enumerate(names) if i % tp == rank]
    t0 = time.time()
    digests = digests_of(model_path, mine, weight_map)
    queue.put({"rank": rank, "seconds": time.time() - t0, "tensors": digests, **hook_state()})


def send(sock, obj):
    data = json.dumps(obj).encode()
    sock.sendall(len(data).to_bytes(8, "big") + data)


def recv(sock):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            buf += chunk
        return buf

    size = int.from_bytes(exact(8), "big")
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes")
    return json.loads(exact(size))


def verdict(args, node_reports):
    names, weight_map = tensor_names(args.expect_from)
    expected = digests_of(args.expect_from, names, weight_map)
    seen, problems = {}, []
    for node in node_reports:
        for r in node["ranks"]:
            for n, d in r["tensors"].items():
                seen[n] = seen.get(n, 0) + 1
                if expected.get(n) != d:
                    problems.append(f"rank {r['rank']}: tensor {n} differs from the store's")
    for n in expected:
        if seen.get(n, 0) != 1:
            problems.append(f"tensor {n} read {seen.get(n, 0)} times")
    return {"ok": not problems, "problems": problems[:20], "tensors": len(expected)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-path", required=True)
    p.add_argument("--tp", type=int, required=True)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--dist-init-addr", required=True)
    p.add_argument("--expect-from", required=True)
    p.add_argument("--report", required=True)
    args = p.parse_args()
    if args.tp % args.nnodes:
        sys.exit(f"--tp {args.tp} is not a multiple of --nnodes {args.nnodes}")
    deadline = time.time() + TIMEOUT_S
    host, port = args.dist_init_addr.rsplit(":", 1)

    # The server process itself reads the model's config, as SGLang's does.
    main_state = hook_state()
    main_state["config_json_bytes"] = len((Path(args.model_path) / "config.json").read_bytes())
    listener = None
    if args.node_rank == 0:
        listener = socket.create_server((host, int(port)))
        listener.settimeout(TIMEOUT_S)

    per_node = args.tp // args.nnodes
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    # The workers attach to this node's agent as secondaries.
    os.environ["ENABLE_CONNECTOR"] = "2"
    procs = []
    for local in range(per_node):
        rank = args.node_rank * per_node + local
        pr = ctx.Process(target=worker, args=(args.model_path, rank, args.tp, queue))
        pr.start()
        procs.append(pr)
    ranks = [queue.get(timeout=max(1, deadline - time.time())) for _ in procs]
    for pr in procs:
        pr.join(timeout=max(1, deadline - time.time()))
        if pr.exitcode != 0:
            sys.exit(f"worker pid {pr.pid} exited with {pr.exitcode}")
    mine = {"node_rank": args.node_rank, "main": main_state, "ranks": ranks}

    if args.node_rank == 0:
        nodes = [mine]
        conns = []
        while len(conns) < args.nnodes - 1:
            conn, _ = listener.accept()
            conn.settimeout(max(1, deadline - time.time()))
            conns.append(conn)
            nodes.append(recv(conn))
        result = verdict(args, nodes)
        for conn in conns:
            send(conn, result)
            conn.close()
    else:
        while True:
            try:
                conn = socket.create_connection((host, int(port)), timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        conn.settimeout(max(1, deadline - time.time()))
        send(conn, mine)
        result = recv(conn)
        conn.close()
    report = {
        "node_rank": args.node_rank,
        "main": main_state,
        "ranks": [{k: v for k, v in r.items() if k != "tensors"} | {"tensor_count": len(r["tensors"])}
                  for r in ranks],
        "verdict": result,
    }
    Path(args.report).write_text(json.dumps(report, indent=1))
    if not result["ok"]:
        sys.exit(f"node {args.node_rank}: {result['problems']}")


if __name__ == "__main__":
    main()
