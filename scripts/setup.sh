# Shared by scripts/demo and scripts/test: a virtualenv with the project installed.
# Sourced, not run. Re-installs only when pyproject.toml changes.

apt_install() {
    # Installs the Debian/Ubuntu packages named, using sudo when not root.
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_venv() {
    local extras="$1"
    if [ ! -x .venv/bin/python ]; then
        if ! python3 -m venv .venv >/dev/null 2>&1; then
            rm -rf .venv
            echo "installing python3-venv" >&2
            apt_install python3-venv python3-pip
            python3 -m venv .venv
        fi
    fi
    local stamp=".venv/.installed-${extras:-runtime}-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        echo "installing Python dependencies into .venv" >&2
        .venv/bin/pip install -q --upgrade pip >/dev/null
        if [ -n "$extras" ]; then
            .venv/bin/pip install -q -e ".[$extras]"
        else
            .venv/bin/pip install -q -e .
        fi
        rm -f .venv/.installed-*
        touch "$stamp"
    fi
}
