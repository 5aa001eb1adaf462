#!/usr/bin/env bash
# Build the lab's base image locally, with no registry: debootstrap Debian into a folder,
# import it as a rootfs image, then add sshd, sudo and the admin user on top.
# The image tag carries a hash of its recipe, so it is rebuilt only when the recipe changes.
# Debian 12 (bookworm) by default, tagged labstats-lab:latest; LABSTATS_IMAGE_SUITE=trixie
# builds Debian 13, tagged labstats-lab:trixie (the second training box of the Molecule
# scenario). Prints the image reference on stdout; progress goes to stderr.
set -o errexit -o pipefail -o nounset

here=$(cd "$(dirname "$0")" && pwd)
suite=${LABSTATS_IMAGE_SUITE:-bookworm}
mirror=${LABSTATS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The packages a cloud image would have: systemd as PID 1, sshd, sudo, python3 for Ansible.
include=systemd,systemd-sysv,dbus,python3,iproute2,sudo,openssh-server,ca-certificates,acl,netbase,procps,less

log() { printf '[build-image] %s\n' "$*" >&2; }

# Extra CA certificates to trust inside the image (a TLS-inspecting proxy's CA, say).
# Default: the host's bundle, so pip/apt in the lab trust what the host trusts.
ca_bundle=${LABSTATS_EXTRA_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here/Dockerfile" "$here"/files/* "$context/"
if [[ -r $ca_bundle ]]; then cp "$ca_bundle" "$context/extra-ca.crt"; else : >"$context/extra-ca.crt"; fi

recipe_hash=$( (echo "$suite $mirror $include"; cd "$context" && sha256sum $(ls | sort)) | sha256sum | cut -c1-12)
rootfs_hash=$(echo "$suite $mirror $include" | sha256sum | cut -c1-12)
image=labstats-lab:$suite-$recipe_hash
# The moving tag the lab and Molecule use: "latest" for Debian 12, the suite's name otherwise.
alias=labstats-lab:$([[ $suite == bookworm ]] && echo latest || echo "$suite")
rootfs_image=labstats-rootfs:$suite-$rootfs_hash

if docker image inspect "$image" >/dev/null 2>&1; then
  log "image $image is up to date"
  docker tag "$image" "$alias"
  echo "$image"
  exit 0
fi

if ! docker image inspect "$rootfs_image" >/dev/null 2>&1; then
  target=$(mktemp -d /var/tmp/labstats-rootfs.XXXXXX)
  log "debootstrap $suite into $target (about a minute)"
  if ! debootstrap --variant=minbase --include="$include" "$suite" "$target" "$mirror" >"$target.log" 2>&1; then
    tail -n 30 "$target.log" >&2; exit 1
  fi
  rm -f "$target.log"
  # Host keys are made per container at first boot (see files/ssh-hostkeys.conf), never baked in.
  rm -f "$target"/etc/ssh/ssh_host_*
  tar -C "$target" -c . | docker import -c 'CMD ["/lib/systemd/systemd"]' - "$rootfs_image" >&2
  rm -rf "$target"
fi

log "building $image"
docker build --quiet >/dev/null --build-arg "BASE=$rootfs_image" -t "$image" -t "$alias" "$context"
echo "$image"
