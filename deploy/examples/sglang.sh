#!/usr/bin/env bash
# SGLang on one node. Both of SGLang's weight loaders (mmap, and --weight-loader-disable-mmap) work:
# every open of a weight file returns a real kernel fd over node memory.
set -euo pipefail
export OSS_ACCESS_KEY_ID=${OSS_ACCESS_KEY_ID:?} OSS_ACCESS_KEY_SECRET=${OSS_ACCESS_KEY_SECRET:?}
export OSS_ENDPOINT=${OSS_ENDPOINT:-oss-cn-beijing-internal.aliyuncs.com}
export OSS_PATH=${OSS_PATH:-oss://my-bucket/qwen/Qwen2.5-7B-Instruct/}
export MODEL_DIR=${MODEL_DIR:-/tmp/model}
LD_PRELOAD=${OSSC_PRELOAD_LIB:-/usr/local/lib/libossc_preload.so} ENABLE_CONNECTOR=1 \
  python3 -m sglang.launch_server --model-path "$MODEL_DIR" "$@"
