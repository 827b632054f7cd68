# Sourced by scripts/setup, scripts/serve and scripts/test (from the
# repository root): becomes root, finds cargo.

# become_root SCRIPT ARGS...: returns when running as root; otherwise runs
# SCRIPT (a path relative to the repository root, the working directory)
# again through sudo, or, without sudo, says how to run it and exits 1.
become_root() {
    local script=$1
    shift
    if [ "$(id -u)" -eq 0 ]; then
        return 0
    fi
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -- "$PWD/$script" "$@"
    fi
    echo "$script: needs root (the sandbox and the package installs need it) and sudo is not installed: run it as root, e.g. su -c $script" >&2
    exit 1
}

# `sudo` resets PATH, so a toolchain installed with rustup by the invoking
# user (~/.cargo/bin) is not on it. find_cargo looks on PATH, then in root's
# and the sudo user's rustup directories, and exports what cargo needs.
find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        return 0
    fi
    local home
    for home in "${HOME:-/root}" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)"; do
        if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
            export CARGO_HOME="$home/.cargo"
            export RUSTUP_HOME="$home/.rustup"
            export PATH="$CARGO_HOME/bin:$PATH"
            return 0
        fi
    done
    return 1
}
