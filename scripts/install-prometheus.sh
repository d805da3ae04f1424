#!/usr/bin/env bash
# Install Prometheus and promtool (Debian/Ubuntu package `prometheus`) for the deploy tests:
#   tests/deploy/test_prometheus_config.py runs `promtool check config|rules` and `promtool test rules`.
#
# Idempotent: if both `prometheus` and `promtool` are already on PATH it does nothing.
# Needs root (or sudo) only when it has to install. The Debian package may start a prometheus
# service; this script stops any prometheus process that the install started, so nothing is left
# running in the background (the tests only need the binaries).
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

if have prometheus && have promtool; then
    echo "install-prometheus: already installed, nothing to do: $(command -v prometheus), $(command -v promtool)"
    promtool --version 2>&1 | head -n 1
    exit 0
fi

# Processes that were running before we install; only ones that appear afterwards are ours to stop.
before="$(pgrep -x prometheus || true)"

apt_install install-prometheus \
    "install prometheus+promtool for your OS (binaries: https://prometheus.io/download/) and put both on PATH" \
    prometheus

# The package's postinst may start the service (systemd or an init script); stop what it started.
if have systemctl && systemctl is-active --quiet prometheus 2>/dev/null; then
    echo "install-prometheus: stopping the prometheus service the package started"
    $SUDO systemctl stop prometheus || true
elif [ -x /etc/init.d/prometheus ]; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi
for pid in $(pgrep -x prometheus || true); do
    case " $(echo $before) " in
        *" $pid "*) ;;  # was running before this script: not ours
        *)
            echo "install-prometheus: stopping background prometheus (pid $pid) started by the package"
            $SUDO kill "$pid" 2>/dev/null || true
            ;;
    esac
done

if ! have prometheus || ! have promtool; then
    echo "install-prometheus: error: the package installed but prometheus/promtool are not on PATH" >&2
    exit 1
fi
echo "install-prometheus: installed $(command -v prometheus) and $(command -v promtool)"
promtool --version 2>&1 | head -n 1
