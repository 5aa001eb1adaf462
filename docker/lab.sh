#!/usr/bin/env bash
# The local lab: two systemd containers standing in for a training box and a web box.
#   docker/lab.sh up     build the image if its recipe changed, start (or resume) the boxes,
#                        give the admin user its SSH key, wait until SSH answers
#   docker/lab.sh down   remove the boxes and their network (credentials/ stays)
#   docker/lab.sh status show the boxes
# Names, network and addresses match inventory/lab/hosts.yml.
set -o errexit -o pipefail -o nounset

root=$(cd "$(dirname "$0")/.." && pwd)
network=labstats-lab
subnet=10.213.0.0/24
credentials=${LABSTATS_CREDENTIALS_DIR:-$root/credentials}
ssh_key=$credentials/lab_ssh_ed25519
admin=labadmin
# box name, address, extra docker run arguments (published ports: loopback only)
boxes=(
  "trainbox 10.213.0.10"
  "webbox 10.213.0.20 -p 127.0.0.1:8443:443 -p 127.0.0.1:8080:80"
)

log() { printf '[lab] %s\n' "$*" >&2; }

# What systemd as PID 1 needs in a container (--privileged fails on some Docker hosts).
systemd_run_args=(
  --cap-add SYS_ADMIN --cap-add NET_ADMIN
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --device /dev/net/tun --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw
  --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3
)

ensure_key() {
  install -d -m 0700 "$credentials"
  if [[ ! -f $ssh_key ]]; then
    ssh-keygen -q -t ed25519 -N '' -C "labstats-lab-admin" -f "$ssh_key"
    log "generated the lab's SSH key: $ssh_key"
  fi
  chmod 0600 "$ssh_key"
}

start_box() {
  local name=$1 address=$2; shift 2
  local container=labstats-lab-$name
  if docker container inspect "$container" >/dev/null 2>&1; then
    docker start "$container" >/dev/null
  else
    docker run -d --name "$container" --hostname "$name" \
      --network "$network" --ip "$address" "${systemd_run_args[@]}" "$@" "$image" >/dev/null
    log "started $container ($address)"
  fi
  # Hand the admin user its key, as cloud-init would on a real box.
  docker exec -i "$container" sh -c "install -d -m 0700 -o $admin -g $admin /home/$admin/.ssh \
    && cat > /home/$admin/.ssh/authorized_keys && chown $admin:$admin /home/$admin/.ssh/authorized_keys \
    && chmod 0600 /home/$admin/.ssh/authorized_keys" <"$ssh_key.pub"
  local tries=0
  until ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o ConnectTimeout=2 -i "$ssh_key" "$admin@$address" true; do
    tries=$((tries + 1))
    [[ $tries -lt 60 ]] || { log "$container: SSH did not answer"; docker logs "$container" | tail -n 20 >&2; exit 1; }
    sleep 1
  done
}

up() {
  ensure_key
  image=$("$root/docker/build-image.sh")
  docker network inspect "$network" >/dev/null 2>&1 || \
    docker network create --subnet "$subnet" "$network" >/dev/null
  for box in "${boxes[@]}"; do
    # shellcheck disable=SC2086  # the extra arguments are meant to split
    start_box $box
  done
  log "boxes up: ssh -i $ssh_key $admin@10.213.0.10 (trainbox), $admin@10.213.0.20 (webbox)"
}

down() {
  for box in "${boxes[@]}"; do
    docker rm -f "labstats-lab-${box%% *}" >/dev/null 2>&1 || true
  done
  docker network rm "$network" >/dev/null 2>&1 || true
  log "lab removed (credentials kept in $credentials)"
}

status() {
  docker ps -a --filter name=labstats-lab- --format 'table {{.Names}}\t{{.Status}}\t{{.Ports}}'
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
