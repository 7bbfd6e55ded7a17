# Shared by scripts/test and scripts/demo: install the Debian packages that are missing (as root, without
# letting apt start their system services) and check that Swift is on PATH.
# Usage: source scripts/lib/setup.sh; baton_setup <caller name>
baton_packages=(librabbitmq-dev libhiredis-dev pkg-config rabbitmq-server redis-server python3-pika tmux libcurl4
    chromium chromium-driver python3-venv faketime)

baton_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

baton_setup() {
    local caller="$1" missing=() package policy
    for package in "${baton_packages[@]}"; do
        baton_installed "$package" || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "$caller: missing Debian packages: ${missing[*]}" >&2
            echo "  run as root, or install them first: sudo apt-get install ${missing[*]}" >&2
            exit 2
        fi
        echo "$caller: installing ${missing[*]}" >&2
        # Keep apt from starting the system rabbitmq-server and redis-server: our own servers own their ports.
        policy=/usr/sbin/policy-rc.d
        local created=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod +x "$policy"
            created=1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
        [ "$created" = 1 ] && rm -f "$policy"
    fi
    if ! command -v swift >/dev/null 2>&1; then
        echo "$caller: the Swift toolchain is not on PATH." >&2
        echo "  Install Swift 6.3 for Debian 12 (https://www.swift.org/install/linux/) and add its usr/bin to PATH." >&2
        exit 2
    fi
}
