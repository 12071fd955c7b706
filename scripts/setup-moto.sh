#!/usr/bin/env bash
# Installs moto (a real S3 API, offline) into .cache/venv for the store's tests.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import moto.server, boto3" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet 'moto[server]==5.1.*' 'boto3>=1.34'
fi
"$VENV/bin/python" -c "import moto; print('moto', moto.__version__)"
