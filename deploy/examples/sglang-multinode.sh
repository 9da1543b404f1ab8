#!/usr/bin/env bash
# SGLang across nodes (tensor parallelism over 2 nodes of 8 GPUs). Every node runs the same
# command with its own rank; every node's server is a main process (ENABLE_CONNECTOR=1) and
# starts that node's agent, and SGLang's scheduler processes on the node inherit the hook and
# attach to it as secondaries. One agent, one fetch per node.
#   node 0: bash sglang-multinode.sh 0 NODE0_IP:50000   [more launch_server flags]
#   node 1: bash sglang-multinode.sh 1 NODE0_IP:50000
# Checked by cluster-tests/tests/netns_sglang.rs, which runs this script on two hosts with a small
# stand-in for SGLang (SGLANG_SERVER) that takes the same flags.
set -euo pipefail
export OSS_ACCESS_KEY_ID=${OSS_ACCESS_KEY_ID:?} OSS_ACCESS_KEY_SECRET=${OSS_ACCESS_KEY_SECRET:?}
export OSS_ENDPOINT=${OSS_ENDPOINT:-oss-cn-beijing-internal.aliyuncs.com}   # no scheme means https
export OSS_PATH=${OSS_PATH:-oss://my-bucket/}             # the bucket root
export MODEL_DIR=${MODEL_DIR:-/tmp/model}
MODEL=${MODEL:-qwen/Qwen2.5-72B-Instruct}                 # the model's prefix below OSS_PATH
TP=${TP:-16}
NNODES=${NNODES:-2}
# Optional: the nodes' agents share the model (each chunk leaves the store once):
#   export OSS_CONNECTOR_PEERS=NODE0_IP:7468,NODE1_IP:7468 OSS_CONNECTOR_CLUSTER_SECRET=...
# Nodes reach each other on TCP 7468 (gRPC control), TCP 7469 (chunk data) and UDP 7469 (gossip).
rank=${1:?usage: $0 NODE_RANK DIST_INIT_ADDR [launch_server flags]}
dist_init_addr=${2:?usage: $0 NODE_RANK DIST_INIT_ADDR [launch_server flags]}
shift 2
# shellcheck disable=SC2086 # SGLANG_SERVER is a command line
LD_PRELOAD=${OSSC_PRELOAD_LIB:-/usr/local/lib/libossc_preload.so} ENABLE_CONNECTOR=1 \
  ${SGLANG_SERVER:-python3 -m sglang.launch_server} \
  --model-path "$MODEL_DIR/$MODEL" --tp "$TP" \
  --nnodes "$NNODES" --node-rank "$rank" --dist-init-addr "$dist_init_addr" "$@"
