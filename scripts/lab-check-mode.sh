#!/usr/bin/env bash
# What the README promises of a preview: `ansible-playbook site.yml --check --diff` on a
# converged lab reports changed=0 and prints no secret. Run by `make lab-check`.
set -o errexit -o nounset -o pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache
log=.cache/check-mode.log
ansible-playbook site.yml --check --diff >"$log"
grep -E '^[a-z0-9-]+ +: ok=' "$log"
if grep -E '^[a-z0-9-]+ +: ok=' "$log" | grep -Eqv ' changed=0 .* failed=0 '; then
  echo "check mode on a converged lab would change something (or failed): see $log" >&2
  exit 1
fi
# Every secret line of credentials/ (passwords, tokens, private keys), never in the output.
python3 - "$log" <<'PY'
import sys
from pathlib import Path

out = Path(sys.argv[1]).read_text()
secrets = [
    line.strip()
    for path in Path("credentials").rglob("*")
    if path.is_file() and path.suffix not in (".pub", ".crt")
    for line in path.read_text(errors="replace").splitlines()
    if len(line.strip()) >= 16 and not line.startswith("-----")
]
leaked = sorted({s[:4] + "..." for s in secrets if s in out})
if not secrets or leaked:
    sys.exit(f"secrets printed by --check --diff: {leaked}" if leaked else "no secrets found to look for")
print(f"check mode: changed=0, none of {len(secrets)} secret lines printed")
PY
