#!/usr/bin/env bash
# Run a command on one of the lab's boxes as the admin user: scripts/lab-ssh.sh webbox 'cmd'
set -o errexit -o pipefail -o nounset
root=$(cd "$(dirname "$0")/.." && pwd)
credentials=${LABSTATS_CREDENTIALS_DIR:-$root/credentials}
declare -A address=([trainbox]=10.213.0.10 [webbox]=10.213.0.20)
box=${1:?which box: trainbox or webbox}
shift
exec ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  -i "$credentials/lab_ssh_ed25519" "labadmin@${address[$box]:?unknown box $box}" "$@"
