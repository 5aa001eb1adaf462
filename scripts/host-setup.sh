#!/usr/bin/env bash
# Make a fresh Debian 12 machine (as root) ready to run the lab and the tests:
# install what is missing, then start a Docker engine if none answers.
# Safe to run again: it installs nothing that is already there.
set -o errexit -o pipefail -o nounset

log() { printf '[host-setup] %s\n' "$*" >&2; }

# command → Debian package that provides it
declare -A wanted=(
  [dockerd]=docker.io
  [debootstrap]=debootstrap
  [nft]=nftables
  [redis-server]=redis-server
  [ssh]=openssh-client
  [ssh-keygen]=openssh-client
  [git]=git
  [make]=make
  [pgrep]=procps
  [chromium]=chromium
  [chromedriver]=chromium-driver
  # the tests check the viewer's /metrics and the shipped alert rules with Prometheus' own checker
  [promtool]=prometheus
)
missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
# A venv needs ensurepip: Debian's python3 ships it in python3-venv.
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# The viewer's point-cloud view draws with Debian's three.js (the browser tests load it).
[[ -f /usr/share/javascript/three/build/three.min.js ]] || missing+=(libjs-three)

if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The lab's own redis-server package must not hold port 6379 on the host: tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

if ! docker info >/dev/null 2>&1; then
  if [[ -d /run/systemd/system ]]; then
    log "starting docker.service"
    systemctl start docker
  else
    # An engine that was killed (CI ends every process a session left running) leaves its
    # pid files behind; dockerd refuses to start over one whose pid now names another
    # process ("pid file found").
    if ! pgrep -x dockerd >/dev/null; then
      pgrep -x containerd >/dev/null || rm -f /run/docker/containerd/containerd.pid
      rm -f /var/run/docker.pid
    fi
    log "no systemd here: starting dockerd in the background (log: /var/log/labstats-dockerd.log)"
    nohup dockerd >/var/log/labstats-dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "the Docker engine did not start"; tail -n 20 /var/log/labstats-dockerd.log >&2 || true; exit 1; }
fi
log "host ready (docker $(docker version --format '{{.Server.Version}}'))"
