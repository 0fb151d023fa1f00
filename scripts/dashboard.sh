#!/usr/bin/env bash
# Set up (first time only) and start the tokconv dashboard on http://127.0.0.1:8501
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python -m streamlit run streamlit_app.py "$@"
