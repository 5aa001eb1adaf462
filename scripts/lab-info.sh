#!/usr/bin/env bash
# What to open after `make lab`, and where the generated secrets are.
set -o errexit -o pipefail -o nounset
root=$(cd "$(dirname "$0")/.." && pwd)
credentials=${LABSTATS_CREDENTIALS_DIR:-$root/credentials}
cat <<INFO

labstats lab is up.
  viewer         https://127.0.0.1:8443/   (self-signed certificate)
                 user: labstats   password: $credentials/web/labstats.password
                 API token for scripts: $credentials/web/labstats.token
  Jupyter        https://127.0.0.1:8443/jupyter/   password: $credentials/web/jupyter.password
  restore drill  make restore-drill
  training box   ssh -i $credentials/lab_ssh_ed25519 labadmin@10.213.0.10
  web box        ssh -i $credentials/lab_ssh_ed25519 labadmin@10.213.0.20
  credentials    $credentials/ (git-ignored, mode 0600)
Re-run 'make lab' at any time: it converges with changed=0. 'make lab-down' removes the boxes.
INFO
