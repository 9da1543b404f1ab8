#!/usr/bin/env bash
# vLLM on one node, loading weights from OSS through libossc_preload.so.
set -euo pipefail
export OSS_ACCESS_KEY_ID=${OSS_ACCESS_KEY_ID:?} OSS_ACCESS_KEY_SECRET=${OSS_ACCESS_KEY_SECRET:?}
export OSS_ENDPOINT=${OSS_ENDPOINT:-oss-cn-beijing-internal.aliyuncs.com}   # no scheme means https
export OSS_PATH=${OSS_PATH:-oss://my-bucket/qwen/Qwen2.5-7B-Instruct/}
export MODEL_DIR=${MODEL_DIR:-/tmp/model}
# ENABLE_CONNECTOR=1: this is the main process; it starts the node agent. vLLM's forked workers
# inherit the hook and attach to the same agent.
LD_PRELOAD=${OSSC_PRELOAD_LIB:-/usr/local/lib/libossc_preload.so} ENABLE_CONNECTOR=1 \
  python3 -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" "$@"
