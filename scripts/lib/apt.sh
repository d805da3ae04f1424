# Sourced by scripts/install-*.sh: install Debian packages for commands the tests need.
# Defines: have CMD; apt_install TAG HINT PKG... (sets SUDO, which the caller may reuse).

have() { command -v "$1" >/dev/null 2>&1; }

# apt_install TAG HINT PKG...: install PKG... with apt-get, as root or through passwordless sudo.
# Exits 1 with a message naming TAG when it cannot: not root and no sudo, or no apt-get (HINT then
# says what to do on another OS).
apt_install() {
    local tag=$1 hint=$2
    shift 2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if have sudo && sudo -n true 2>/dev/null; then
            SUDO="sudo -n"
        else
            echo "$tag: error: $* must be installed and installing needs root." >&2
            echo "  run as root: sudo $0   (or: apt-get install -y $*)" >&2
            exit 1
        fi
    fi
    if ! have apt-get; then
        echo "$tag: error: apt-get not found; $hint" >&2
        exit 1
    fi
    echo "$tag: installing $* with apt-get"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
