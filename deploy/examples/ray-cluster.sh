#!/usr/bin/env bash
# vLLM across a Ray cluster, the vendor's way: the hook and the OSS_* variables are set on EACH
# node's `ray start`, because every Ray process (gcs_server, raylet, the workers) inherits that
# environment.
#   head:    bash ray-cluster.sh head   NODE_IP          [more `ray start` flags]
#   workers: bash ray-cluster.sh worker NODE_IP HEAD_IP  [more `ray start` flags]
# `ray start` itself (ENABLE_CONNECTOR=1) is the node's first main process: it starts the node's
# agent, which mirrors OSS_PATH into MODEL_DIR. Raylet, gcs_server and every worker find that agent
# and attach to it (they log "working as secondary"). One agent, one fetch per node.
# Checked by cluster-tests/tests/netns_ray.rs, which runs this script on two hosts.
set -euo pipefail
export OSS_ACCESS_KEY_ID=${OSS_ACCESS_KEY_ID:?} OSS_ACCESS_KEY_SECRET=${OSS_ACCESS_KEY_SECRET:?}
export OSS_ENDPOINT=${OSS_ENDPOINT:-oss-cn-beijing-internal.aliyuncs.com}   # no scheme means https
# The bucket root: vLLM then loads the model from $MODEL_DIR/<prefix>, e.g.
# $MODEL_DIR/qwen/Qwen2.5-72B-Instruct for oss://my-bucket/qwen/Qwen2.5-72B-Instruct/.
export OSS_PATH=${OSS_PATH:-oss://my-bucket/}
export MODEL_DIR=${MODEL_DIR:-/tmp/model}
# Optional: the nodes' agents share the model (each chunk leaves the store once). Every node lists
# every node's agent, and all share one secret (at least 16 bytes):
#   export OSS_CONNECTOR_PEERS=10.0.0.1:7468,10.0.0.2:7468 OSS_CONNECTOR_CLUSTER_SECRET=...
# Nodes reach each other on TCP 7468 (gRPC control), TCP 7469 (chunk data) and UDP 7469 (gossip).
export LD_PRELOAD=${OSSC_PRELOAD_LIB:-/usr/local/lib/libossc_preload.so} ENABLE_CONNECTOR=1
# Ray adds its own LD_PRELOAD (jemalloc) to gcs_server and raylet only when LD_PRELOAD is unset,
# so ours is kept. Raylet removes LD_PRELOAD from the workers it starts when
# RAY_LD_PRELOAD_ON_WORKERS=0, and then the workers would read MODEL_DIR's placeholders (zeros,
# sized right): keep it 1.
unset RAY_JEMALLOC_LIB_PATH
export RAY_LD_PRELOAD_ON_WORKERS=1
role=${1:-}
node_ip=${2:?usage: $0 head NODE_IP | worker NODE_IP HEAD_IP}
case "$role" in
  head) shift 2; ray start --head --node-ip-address="$node_ip" --port=6379 "$@" ;;
  worker) head_ip=${3:?head ip}; shift 3; ray start --node-ip-address="$node_ip" --address="$head_ip:6379" "$@" ;;
  *) echo "usage: $0 head NODE_IP | worker NODE_IP HEAD_IP" >&2; exit 2 ;;
esac
# Then, on the head, the API server attaches to the head's agent (ENABLE_CONNECTOR=2, the same
# MODEL_DIR; CONNECTOR_UDS_PATH too if you set one):
#   LD_PRELOAD=/usr/local/lib/libossc_preload.so ENABLE_CONNECTOR=2 MODEL_DIR=/tmp/model \
#   python3 -m vllm.entrypoints.openai.api_server --model /tmp/model/qwen/Qwen2.5-72B-Instruct \
#       --tensor-parallel-size 8 --pipeline-parallel-size 2 --distributed-executor-backend ray
