#!/usr/bin/env bash
# Audit the locked dependencies (requirements.lock) for known vulnerabilities.
#
#   scripts/audit.sh [--lock FILE] [--ignore FILE] [--allow-unaudited] [--pip-audit]
#   make audit            (the same, strict)
#
# Data source: PyPI's JSON API, whose "vulnerabilities" field is the PyPA advisory database
# (PYSEC-/GHSA- IDs with CVE aliases), the same data pip-audit's default service reads.
#   1. GET https://pypi.org/pypi/NAME/VERSION/json, the per-release record pip-audit uses;
#   2. where that is not served (the PyPI this project's machines reach answers 404 for every
#      per-release URL, which makes pip-audit report "Dependency not found on PyPI and could not be
#      audited" and still exit 0), GET https://pypi.org/pypi/NAME/json: its "vulnerabilities" are
#      those of the project's latest release, so they audit a pin equal to that release;
#   3. a pin older than the latest release can't be audited that way: it is reported UNAUDITED.
# Before auditing it checks that the service reports a known-vulnerable release (pycrypto 2.6.1, the
# last release of a dead project), so a service that returns no vulnerability data fails the audit
# instead of passing it.
#
# Exit status: 0 clean; 1 an unignored vulnerability, an unignored UNAUDITED pin (unless
# --allow-unaudited), or a lookup that failed; 2 usage or ignore-file errors.
#
# Ignore file (default security/pip-audit-ignore.txt), one entry a line, `KEY  REASON` (reason required):
#   KEY = a vulnerability ID or alias (PYSEC-..., GHSA-..., CVE-...): an accepted finding;
#   KEY = unaudited:NAME==VERSION: an accepted pin that can't be audited here (the version must match
#         the lock exactly, so a re-lock makes the entry stale and it must be looked at again).
#
# --pip-audit runs pip-audit itself instead (`pip-audit` on PATH, e.g. from a throwaway venv:
# python3 -m venv /tmp/auditvenv && /tmp/auditvenv/bin/pip install pip-audit), with --strict so that
# an unaudited dependency fails, and the ignore file's vulnerability IDs passed as --ignore-vuln. Use it
# where pypi.org's per-release JSON or api.osv.dev (PIP_AUDIT_ARGS="-s osv") is reachable.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LOCK="$ROOT/requirements.lock"
IGNORE="$ROOT/security/pip-audit-ignore.txt"
ALLOW_UNAUDITED=0
USE_PIP_AUDIT=0
while [ $# -gt 0 ]; do
    case "$1" in
        --lock) LOCK="$(realpath "$2")"; shift 2 ;;
        --ignore) IGNORE="$(realpath "$2")"; shift 2 ;;
        --allow-unaudited) ALLOW_UNAUDITED=1; shift ;;
        --pip-audit) USE_PIP_AUDIT=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "audit: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ -f "$LOCK" ] || { echo "audit: no lock file $LOCK (make lock)" >&2; exit 2; }
[ -f "$IGNORE" ] || { echo "audit: no ignore file $IGNORE" >&2; exit 2; }
cd "$ROOT"

if [ "$USE_PIP_AUDIT" = 1 ]; then
    command -v pip-audit >/dev/null || { echo "audit: pip-audit is not on PATH" >&2; exit 2; }
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    # pip-audit looks up the public version: drop local labels such as torch's +cpu.
    sed -E 's/^([^#][^=]*==[^+;[:space:]]+)\+[^;[:space:]]+/\1/' "$LOCK" >"$tmp"
    ignores=()
    while read -r key _; do
        case "$key" in ''|'#'*|unaudited:*) ;; *) ignores+=(--ignore-vuln "$key") ;; esac
    done <"$IGNORE"
    # shellcheck disable=SC2086
    pip-audit -r "$tmp" --no-deps --disable-pip --strict --progress-spinner off ${PIP_AUDIT_ARGS:-} \
        "${ignores[@]}"
    exit $?
fi

PYTHON=python3
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
exec "$PYTHON" - "$LOCK" "$IGNORE" "$ALLOW_UNAUDITED" <<'PY'
import json
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

lock_path, ignore_path, allow_unaudited = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
BASE = "https://pypi.org/pypi"
CANARY = ("pycrypto", "2.6.1", "PYSEC-2017-94")


def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version):
    return version.split("+", 1)[0]


def same_version(a, b):
    try:
        from packaging.version import Version

        return Version(a) == Version(b)
    except ImportError:
        return a == b
    except Exception:
        return a == b


def get(url):
    """JSON for url; None on 404; raises after 3 tries on anything else."""
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            err = exc
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            err = exc
        time.sleep(1 + 2 * attempt)
    raise RuntimeError(f"{url}: {err}")


def lookup(name, version):
    """(status, vulns, detail): status is 'release', 'latest' or 'unaudited'."""
    data = get(f"{BASE}/{name}/{public(version)}/json")
    if data is not None:
        return "release", data.get("vulnerabilities") or [], ""
    data = get(f"{BASE}/{name}/json")
    if data is None:
        return "unaudited", [], "not found on PyPI"
    latest = data["info"]["version"]
    if same_version(latest, public(version)):
        return "latest", data.get("vulnerabilities") or [], ""
    # The latest release's open (unfixed) advisories most likely cover this older pin too: report them.
    open_vulns = [v for v in data.get("vulnerabilities") or [] if not v.get("fixed_in")]
    return "unaudited", open_vulns, f"latest release is {latest}; per-release data not served"


# --- lock and ignore file
pins = []
for lineno, raw in enumerate(open(lock_path), 1):
    line = raw.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
    if not m:
        print(f"audit: {lock_path}:{lineno}: expected NAME==VERSION, got {line!r}", file=sys.stderr)
        sys.exit(2)
    pins.append((canon(m[1]), m[2]))
if not pins:
    print(f"audit: {lock_path}: no pins", file=sys.stderr)
    sys.exit(2)

ignored_ids, ignored_pins = {}, {}
for lineno, raw in enumerate(open(ignore_path), 1):
    line = raw.strip()
    if not line or line.startswith("#"):
        continue
    key, _, reason = line.partition(" ")
    if not reason.strip():
        print(f"audit: {ignore_path}:{lineno}: {key}: every entry needs a reason", file=sys.stderr)
        sys.exit(2)
    if key.startswith("unaudited:"):
        name, sep, version = key[len("unaudited:"):].partition("==")
        if not sep:
            print(f"audit: {ignore_path}:{lineno}: expected unaudited:NAME==VERSION", file=sys.stderr)
            sys.exit(2)
        ignored_pins[(canon(name), version)] = reason.strip()
    else:
        ignored_ids[key.upper()] = reason.strip()

# --- canary: the service must report a known vulnerability
try:
    status, vulns, _ = lookup(CANARY[0], CANARY[1])
except RuntimeError as exc:
    print(f"audit: FAILED: vulnerability service unreachable: {exc}")
    sys.exit(1)
if not any(CANARY[2] in [v.get("id"), *(v.get("aliases") or [])] for v in vulns):
    print(f"audit: FAILED: the service does not report {CANARY[2]} for {CANARY[0]} {CANARY[1]}; "
          "its vulnerability data can't be trusted")
    sys.exit(1)

# --- audit
with ThreadPoolExecutor(8) as pool:
    futures = [(n, v, pool.submit(lookup, n, v)) for n, v in pins]
failed = False
counts = {"ok": 0, "vulnerable": 0, "unaudited": 0, "error": 0}
seen_ids, used_pins = set(), set()
print(f"audit: {len(pins)} pins in {lock_path}")
for name, version, fut in futures:
    try:
        status, vulns, detail = fut.result()
    except RuntimeError as exc:
        print(f"ERROR       {name}=={version}: {exc}")
        counts["error"] += 1
        failed = True
        continue
    open_, n_ignored = [], 0
    for v in vulns:
        ids = {v.get("id", "?"), *(v.get("aliases") or [])}
        seen_ids.update(i.upper() for i in ids)
        hit = next((i for i in sorted(ids) if i.upper() in ignored_ids), None)
        fixed = ", ".join(v.get("fixed_in") or []) or "none"
        if hit:
            n_ignored += 1
            print(f"IGNORED     {name}=={version}: {v.get('id')} (fixed in {fixed}): {ignored_ids[hit.upper()]}")
        else:
            open_.append(f"{v.get('id')} [{', '.join(sorted(ids - {v.get('id')}))}] fixed in {fixed}")
    if open_:
        counts["vulnerable"] += 1
        failed = True
        for text in open_:
            print(f"VULNERABLE  {name}=={version}: {text}")
    if status == "unaudited":
        counts["unaudited"] += 0 if open_ else 1
        reason = ignored_pins.get((name, version))
        if reason:
            used_pins.add((name, version))
            print(f"UNAUDITED   {name}=={version} ({detail}); accepted: {reason}")
        elif allow_unaudited:
            print(f"UNAUDITED   {name}=={version} ({detail}); allowed by --allow-unaudited")
        else:
            print(f"UNAUDITED   {name}=={version} ({detail}); not in {ignore_path}")
            failed = True
    elif not open_:
        counts["ok"] += 1
        note = f"; {n_ignored} ignored" if n_ignored else ""
        print(f"OK          {name}=={version} (audited: {status} record{note})")

for key in sorted(set(ignored_pins) - used_pins):
    print(f"note: stale entry in {ignore_path}: unaudited:{key[0]}=={key[1]} (no such unaudited pin)")
for key in sorted(set(ignored_ids) - seen_ids):
    print(f"note: entry in {ignore_path} matched nothing this run: {key}")
print("audit: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + f" of {len(pins)} pins")
print("audit: FAILED" if failed else "audit: passed")
sys.exit(1 if failed else 0)
PY
