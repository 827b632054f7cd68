# Sourced by scripts/setup and scripts/test: finds cargo for a root shell.
#
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
