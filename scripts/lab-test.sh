#!/usr/bin/env bash
# Run infra tests (tests/infra, the same ones Molecule's verify runs) against the `make lab`
# boxes: scripts/lab-test.sh [PYTEST ARGS...], e.g. scripts/lab-test.sh tests/infra/test_archive.py
# testinfra reads the inventory without templating, so a plain copy of the lab's is written.
set -o errexit -o nounset -o pipefail
cd "$(dirname "$0")/.."
root=$PWD
mkdir -p .cache
inventory=.cache/lab-inventory.yml
cat >"$inventory" <<YAML
all:
  vars:
    ansible_user: labadmin
    ansible_ssh_private_key_file: $root/credentials/lab_ssh_ed25519
    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    nginx_public_https_port: 8443
    nginx_server_name: 127.0.0.1
    # as inventory/lab: the receivers tests/infra/test_alerts.py starts, a short stall threshold
    alerts_channels: ["json://127.0.0.1:8765/", "mailto://127.0.0.1:8025?to=ops@example.com&from=labstats@example.com"]
    alerts_stall_after: 30
  children:
    training: {hosts: {trainbox: {ansible_host: 10.213.0.10}}}
    web: {hosts: {webbox: {ansible_host: 10.213.0.20}}}
YAML
export PATH=$root/.venv/bin:$PATH MOLECULE_INVENTORY_FILE=$root/$inventory LABSTATS_CREDENTIALS_DIR=$root/credentials
exec pytest -p no:cacheprovider --rootdir=tests/infra --ansible-inventory="$MOLECULE_INVENTORY_FILE" \
  --connection=ansible "${@:-tests/infra}"
