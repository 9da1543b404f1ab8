# syntax=docker/dockerfile:1
#
# Vendor style: an application (inference server) image with the connector installed from our
# Debian package, for deploy/kubernetes/vendor-style/deployment.yaml.
#
#   bash scripts/package.sh                      # builds ossc_<version>_amd64.deb
#   docker build -f deploy/container/Dockerfile.app -t REGISTRY/vllm-oss-connector:TAG DIR
#
# DIR is the directory holding exactly one ossc_<version>_amd64.deb (the build context needs
# nothing else). BASE is any glibc image the package supports; vLLM's and SGLang's images are
# Ubuntu 22.04 (glibc 2.35).
#
# Nothing here sets LD_PRELOAD: the Deployment sets it (with ENABLE_CONNECTOR=1) on the server
# container only, so `docker build` steps and other commands in the image run without the hook.
ARG BASE=vllm/vllm-openai:latest
FROM ${BASE}
COPY ossc_*_amd64.deb /tmp/
# The package puts the hook at /usr/local/lib/libossc_preload.so and the agent at
# /usr/local/bin/ossc (the hook finds the agent at ../bin/ossc relative to itself); the checks
# fail the build if the package's layout ever differs from what the Deployment names.
RUN set -eux; \
    ls /tmp/ossc_*_amd64.deb | wc -l | grep -qx 1; \
    dpkg -i /tmp/ossc_*_amd64.deb; \
    rm -f /tmp/ossc_*_amd64.deb; \
    test -f /usr/local/lib/libossc_preload.so; \
    test -x /usr/local/bin/ossc; \
    /usr/local/bin/ossc --version
