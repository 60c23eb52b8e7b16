#!/bin/sh
# `serve` is what SageMaker hosting runs (port 8080, the model unpacked in /opt/ml/model); anything else is
# an identigraph command (processing and training steps set their own entry point).
set -e
if [ "${1:-serve}" = "serve" ]; then
    [ $# -gt 0 ] && shift
    exec identigraph serve --model "${IDENTIGRAPH_MODEL_DIR:-/opt/ml/model}" --host 0.0.0.0 --port 8080 \
        --workers "${IDENTIGRAPH_WORKERS:-1}" "$@"
fi
exec identigraph "$@"
