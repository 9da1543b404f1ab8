"""Scaling model of peer-assisted loading: store egress and completion
time vs the number of nodes N, with and without the peer layer.

A fluid (bandwidth-only) model of the design in peer/src/swarm/, with the
effects that the netns measurements showed to matter:
  * ring imbalance: chunks (16 MiB) are assigned per object by rendezvous
    hashing, so the busiest owner holds more than 1/N of the model (Monte Carlo
    over random assignments; with fewer chunks than nodes most nodes own none);
  * owner-first pulls: in a simultaneous start every node asks a chunk's owner
    (no one else holds it yet), so the busiest owner uploads its share to N-1
    nodes; holders relay only chunks that completed before a pull began;
  * cut-through: owners stream a chunk while it arrives from the store, and
    waits follow the owner's progress, so the store phase and the exchange
    overlap (no waves, no timed-out pulls, egress = one model); the pipeline
    adds about one chunk's transfer on a node link.

Times (M model bytes, Bs store uplink, Bn node link, payload rates):
  no peers:  T = T0 + max(N*M/Bs, M/min(Bn, STORE_CONC*conn_rate))                 egress N*M
  peers:     T = T0 + max(M/Bs, Smax/Bstore_node, Smax*(N-1)/Bn, M/Bn) + C/Bn       egress M
  ideal:     a relay tree from any holder (not built: holders relay only what
             they completed before a pull started):
             T = T0 + max(M/Bs, M/Bn) + ceil(log2 N)*C/Bn                           egress M
T0 (agent start-up, listing, membership, verification) is calibrated from the
measured N=1 point (no peers); tbf caps are turned into payload rates with
EFFICIENCY.

Not modelled (where it breaks): start-up grace (the 5 s wait for peers to
appear and all-to-all 1 s heartbeats, O(N^2) messages, grow with N); the busiest
owner's connection count ((N-1)*PULL_CONC streams at N=256 is ~4000); CPU (on
the 2-core VM N agents and consumers share 2 cores; real nodes don't, so T0
stays flat); TCP dynamics and tbf bursts.

Usage:
  python3 scripts/peer_scaling_model.py                       # predictions to 256 nodes
  python3 scripts/peer_scaling_model.py --check "$(bash scripts/cargo-target-dir.sh)/bench/peers.json"   # vs measured points
"""
import argparse
import json
import math
import random
import statistics
import sys

MiB = 1 << 20
# The peer layer's constants (peer/src/swarm/): chunk size and pull concurrency.
CHUNK = 16 * MiB
PULL_CONC = 16
# Store fetch defaults of the cluster harness (prefetch.vcpus=4 x workers=8 parts of 8 MiB).
STORE_CONC = 32
PART = 8 * MiB
# Payload share of a tbf cap (Ethernet + IP + TCP headers, TLS records).
EFFICIENCY = 0.94
MONTE_CARLO_TRIALS = 200


def max_owner_share(chunk_counts, n, trials=MONTE_CARLO_TRIALS, seed=1):
    """Expected largest number of chunk bytes owned by one node, with every
    chunk of every object assigned to a uniformly random node (what rendezvous
    hashing does), as (mean over trials). chunk_counts: list of (chunks, bytes)
    per object, the last chunk possibly short."""
    if n == 1:
        return sum(b for _, b in chunk_counts)
    rng = random.Random(seed)
    sizes = []
    for chunks, size in chunk_counts:
        for i in range(chunks):
            sizes.append(min(CHUNK, size - i * CHUNK))
    worst = []
    for _ in range(trials):
        load = [0] * n
        for s in sizes:
            load[rng.randrange(n)] += s
        worst.append(max(load))
    return statistics.mean(worst)


def objects_for(model_bytes, files):
    """files: a count (equal shards) or the list of file sizes."""
    sizes = files if isinstance(files, list) else [model_bytes // files] * files
    return [(math.ceil(s / CHUNK), s) for s in sizes if s > 0]


def predict(n, m, bs, bn, t0, files=4, conn_rate=math.inf, rtt=0.0):
    """Predicted (time, egress) for each design, plus notes on what bounds it."""
    bs, bn = bs * EFFICIENCY, bn * EFFICIENCY
    store_node = min(bn, STORE_CONC * conn_rate)
    out = {}
    out["no_peers"] = {"time": t0 + max(n * m / bs, m / store_node), "egress": n * m, "notes": []}
    smax = max_owner_share(objects_for(m, files), n)
    bounds = {
        "store uplink": m / bs,
        "busiest owner's store share": smax / store_node,
        "busiest owner's upload": smax * (n - 1) / bn,
        "node downlink": m / bn,
    }
    limit = max(bounds, key=bounds.get)
    hop = CHUNK / bn if n > 1 else 0.0
    notes = [f"bound by the {limit}"] if n > 1 else []
    out["peers"] = {"time": t0 + bounds[limit] + hop + rtt, "egress": m, "notes": notes,
                    "max_owner_share": smax}
    gens = math.ceil(math.log2(n)) if n > 1 else 0
    out["ideal_relay_tree"] = {"time": t0 + max(m / bs, m / bn) + gens * CHUNK / bn + rtt,
                               "egress": m, "notes": []}
    return out


def fmt_s(x):
    return f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def table(scenario, ns, m, bs, bn, t0, files, conn_rate, rtt):
    nfiles = len(files) if isinstance(files, list) else files
    print(f"\n### {scenario}: model {m / 1e9:.1f} GB ({nfiles} files), store uplink {bs * 8 / 1e9:g} Gbit/s, "
          f"node links {bn * 8 / 1e9:g} Gbit/s, T0 {t0:.1f} s")
    print("| N | no peers: time s | egress/model | peers: time s | egress/model | "
          "busiest owner's share | ideal relay tree: time s | what bounds the peers' time |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for n in ns:
        p = predict(n, m, bs, bn, t0, files, conn_rate, rtt)
        a, b, c = p["no_peers"], p["peers"], p["ideal_relay_tree"]
        print(f"| {n} | {fmt_s(a['time'])} | {a['egress'] / m:.0f} | {fmt_s(b['time'])} | {b['egress'] / m:.2f} | "
              f"{b['max_owner_share'] / m:.3f} | {fmt_s(c['time'])} | {'; '.join(b['notes']) or '-'} |")
        rows.append({"nodes": n, **{k: {kk: vv for kk, vv in v.items()} for k, v in p.items()}})
    return rows


def check(path):
    """Compares the model with the measured points of scripts/bench.py peers."""
    data = json.load(open(path))
    raw = data.get("raw", data)
    m = raw["model_bytes"]
    files = raw.get("file_sizes") or max(1, raw.get("model_files", 6) - 2)
    bs = raw["store_uplink_bits_per_sec"] / 8
    bn = raw["node_link_bits_per_sec"] / 8
    med = {}
    for r in raw["results"]:
        for mode in ("no_peers", "peers"):
            med[(r["nodes"], mode)] = (statistics.median(x[mode]["wall_s"] for x in r["rounds"]),
                                       statistics.median(x[mode]["egress_over_model"] for x in r["rounds"]))
    if (1, "no_peers") not in med:
        sys.exit("the check needs the N=1 point (it calibrates T0)")
    t0 = med[(1, "no_peers")][0] - m / (min(bs, bn) * EFFICIENCY)
    print(f"calibration: T0 = measured N=1 time - model/min(Bs, Bn) = {t0:.2f} s")
    print("| N | mode | measured s | predicted s | error | measured egress/model | predicted |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for n in sorted({k[0] for k in med}):
        p = predict(n, m, bs, bn, t0, files)
        for mode, key in (("no_peers", "no_peers"), ("peers", "peers")):
            if (n, mode) not in med:
                continue
            t, e = med[(n, mode)]
            pt, pe = p[key]["time"], p[key]["egress"] / m
            err = (pt - t) / t
            print(f"| {n} | {mode} | {t:.2f} | {pt:.2f} | {100 * err:+.0f}% | {e:.3f} | {pe:.2f} |")
            rows.append({"nodes": n, "mode": mode, "measured_s": t, "predicted_s": pt, "error": err,
                         "measured_egress": e, "predicted_egress": pe})
    return {"t0": t0, "rows": rows, "model_bytes": m, "bs": bs, "bn": bn, "files": files}


def main():
    global STORE_CONC
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", help="peers.json (or peers-raw.json) from `bash scripts/bench.sh peers`")
    ap.add_argument("--nodes", default="1,2,4,8,32,256")
    ap.add_argument("--json", help="write the predictions here")
    ap.add_argument("--store-conc", type=int, default=STORE_CONC,
                    help="store parts in flight per node (what-if; default: the cluster harness's 32)")
    args = ap.parse_args()
    STORE_CONC = args.store_conc
    ns = [int(x) for x in args.nodes.split(",")]
    out = {}
    t0 = 3.0
    if args.check:
        c = check(args.check)
        out["check"] = c
        t0 = c["t0"]
        out["bench_scaled"] = table("The benchmark's setup, scaled out", ns, c["model_bytes"], c["bs"], c["bn"],
                                    t0, c["files"], math.inf, 0.0)
    # A production-like cluster: a 70B fp16 model (140 GB in 30 shards), a store
    # account capped at 25 Gbit/s, 25 Gbit/s node front-end links, 100 MB/s per
    # store connection, T0 as measured (or 3 s).
    out["production_like"] = table("Production-like (70B fp16)", ns, 140e9, 25e9 / 8, 25e9 / 8, t0, 30,
                                   100e6, 0.002)
    if args.json:
        json.dump(out, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
