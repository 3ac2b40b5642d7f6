# Sourced by scripts/serve and scripts/test: make .venv with smsgw installed (plus extras).
# Works on a fresh Debian with Python 3.11; installs python3-venv via apt-get if venv is missing.
set -euo pipefail

ensure_venv() {
    local extras="${1:-}"
    local python="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        if ! "$python" -m venv .venv 2>/dev/null; then
            # Debian ships ensurepip separately.
            rm -rf .venv
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$python" -m venv .venv
        fi
    fi
    local stamp=".venv/.installed${extras:+-$extras}"
    # Reinstall only when the project's dependencies changed since the last install.
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
        .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
        touch "$stamp"
    fi
}
