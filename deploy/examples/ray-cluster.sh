#!/usr/bin/env bash
# vLLM across a Ray cluster. Ray workers inherit the environment of `ray start`, so the hook and the
# OSS_* variables must be set when EACH node's `ray start` runs.
#   head:    bash ray-cluster.sh head
#   workers: bash ray-cluster.sh worker HEAD_IP
# Every process on a node then inherits ENABLE_CONNECTOR=1; the first one starts the node agent and
# every later one finds it alive and works as secondary (it logs so). One fetch per node.
set -euo pipefail
export OSS_ACCESS_KEY_ID=${OSS_ACCESS_KEY_ID:?} OSS_ACCESS_KEY_SECRET=${OSS_ACCESS_KEY_SECRET:?}
export OSS_ENDPOINT=${OSS_ENDPOINT:-oss-cn-beijing-internal.aliyuncs.com}
export OSS_PATH=${OSS_PATH:-oss://my-bucket/qwen/Qwen2.5-72B-Instruct/}
export MODEL_DIR=${MODEL_DIR:-/tmp/model}
export LD_PRELOAD=/usr/lib/ossc/libossc_preload.so ENABLE_CONNECTOR=1
# Ray would otherwise drop LD_PRELOAD for gcs/raylet (RAY_JEMALLOC_LIB_PATH) or for workers.
unset RAY_JEMALLOC_LIB_PATH
export RAY_LD_PRELOAD_ON_WORKERS=1
case "${1:-}" in
  head) ray start --head --port=6379 ;;
  worker) ray start --address="${2:?head ip}:6379" ;;
  *) echo "usage: $0 head | worker HEAD_IP" >&2; exit 2 ;;
esac
# Then, on the head:
#   python3 -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" \
#       --tensor-parallel-size 8 --pipeline-parallel-size 2 --distributed-executor-backend ray
