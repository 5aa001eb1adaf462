#!/usr/bin/env bash
# Log a first run on the lab's training box, as a user would: the demo script, run by the
# training user with the labstats client. Skipped when a run named "demo" exists already.
set -o errexit -o pipefail -o nounset
root=$(cd "$(dirname "$0")/.." && pwd)
ssh_box() { "$root/scripts/lab-ssh.sh" trainbox "$@"; }
if ssh_box "sudo -iu researcher /opt/labstats/venv/bin/labstats ls --name demo --json" | grep -q '"name": "demo"'; then
  echo "[lab] demo run exists already"
  exit 0
fi
echo "[lab] logging the demo run on the training box (examples/demo_train.py)"
ssh_box "sudo -u researcher tee /home/researcher/demo_train.py >/dev/null" <"$root/examples/demo_train.py"
ssh_box "sudo -iu researcher /opt/labstats/venv/bin/python demo_train.py --name demo"
