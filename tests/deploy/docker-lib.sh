# shellcheck shell=bash
# Helpers for scripts/docker-test.sh: a private Docker daemon under a temporary folder and a
# debian:bookworm-slim base image built locally (no image registry is needed or used).
# Sourced, not run. Expects: ROOT (repository), WORK (temporary folder, removed by the caller's
# trap through dk_cleanup), and `log`/`skip`/`die` functions.

DOCKER=${DOCKER:-/usr/bin/docker}          # Debian's docker.io client, same version as dockerd
CACHE_DIR=${ESTUARY_CI_CACHE:-/var/cache/estuary-ci}
BASE_IMAGE=debian:bookworm-slim
BASE_STAMP=v3                              # bump to rebuild cached base tarballs
DK_NETMODE=bridge                          # bridge, or host when bridge networking cannot start
DK_PID=
DK_CREATED_DOCKER0=0
DK_FW_SAVED=0                              # 1: restore the firewall and ip_forward at cleanup

# apt_install PKG...: installs the missing ones (waits for apt/dpkg locks held by others)
apt_install() {
  local missing=() p
  for p in "$@"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]}"
  local apt=(timeout -k 10 1200 env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$WORK/apt.log" 2>&1; then
    "${apt[@]}" update >>"$WORK/apt.log" 2>&1 || true
    "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1 || {
      tail -20 "$WORK/apt.log" >&2
      return 1
    }
  fi
}

# dk ARGS: docker against the private daemon, bounded by DK_TIMEOUT seconds (default 120);
# dk_t SECONDS ARGS: the same with another bound (builds)
dk() { DOCKER_HOST="unix://$WORK/docker.sock" timeout --foreground -k 5 "${DK_TIMEOUT:-120}" "$DOCKER" "$@"; }
dk_t() {
  local secs=$1
  shift
  DK_TIMEOUT=$secs dk "$@"
}

# dk_try_start DRIVER EXTRA_ARGS...: starts dockerd, waits up to 40 s for its API
dk_try_start() {
  local driver=$1
  shift
  rm -rf "$WORK/docker" "$WORK/exec"
  mkdir -p "$WORK/docker" "$WORK/exec"
  log "starting dockerd (storage driver $driver${*:+, $*})"
  dockerd --data-root "$WORK/docker" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "unix://$WORK/docker.sock" --storage-driver "$driver" "$@" >"$WORK/dockerd.log" 2>&1 &
  DK_PID=$!
  local deadline=$((SECONDS + 40))
  until dk version >/dev/null 2>&1; do
    if ! kill -0 "$DK_PID" 2>/dev/null || ((SECONDS >= deadline)); then
      log "dockerd did not come up:"
      tail -5 "$WORK/dockerd.log" | sed 's/^/    /' >&2
      dk_stop_daemon
      return 1
    fi
    sleep 0.5
  done
  # a container must actually start with this driver (overlay2 can mount but fail later)
  return 0
}

# dk_start: a private dockerd; tries overlay2 then vfs, bridge networking then host-only
dk_start() {
  command -v dockerd >/dev/null || skip "dockerd is not installed and could not be installed"
  ip link show docker0 >/dev/null 2>&1 || DK_CREATED_DOCKER0=1
  # dockerd adds NAT/FORWARD rules (and sets the FORWARD policy to DROP) and ip_forward=1,
  # and leaves them behind; when no other Docker runs here, put the host back as it was.
  if [[ $DK_CREATED_DOCKER0 -eq 1 ]] && ! pgrep -x dockerd >/dev/null && command -v iptables-save >/dev/null; then
    iptables-save >"$WORK/iptables.before" 2>/dev/null && DK_FW_SAVED=1
    sysctl -n net.ipv4.ip_forward >"$WORK/ip_forward.before" 2>/dev/null || true
  fi
  local driver
  for driver in ${ESTUARY_DOCKER_STORAGE:-overlay2 vfs}; do
    if dk_try_start "$driver"; then
      DK_NETMODE=bridge
      return 0
    fi
  done
  # no iptables / bridge here: containers share the host network (ports must be free)
  for driver in ${ESTUARY_DOCKER_STORAGE:-overlay2 vfs}; do
    if dk_try_start "$driver" --iptables=false --ip-masq=false --bridge=none; then
      DK_NETMODE=host
      log "bridge networking is unavailable; using --network host for every container"
      return 0
    fi
  done
  skip "no Docker daemon can start on this machine (see the dockerd errors above)"
}

dk_stop_daemon() {
  [[ -n "$DK_PID" ]] || return 0
  if kill -0 "$DK_PID" 2>/dev/null; then
    kill -TERM "$DK_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$DK_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$DK_PID" 2>/dev/null || true
  fi
  wait "$DK_PID" 2>/dev/null || true
  DK_PID=
}

# dk_cleanup: every container and network of this daemon, the daemon (and its containerd),
# mounts under WORK, the docker0 bridge if this run created it, then WORK itself
dk_cleanup() {
  if [[ -n "$DK_PID" ]] && kill -0 "$DK_PID" 2>/dev/null; then
    local ids=()
    mapfile -t ids < <(dk ps -aq 2>/dev/null || true)
    if [[ ${#ids[@]} -gt 0 ]]; then dk rm -f "${ids[@]}" >/dev/null 2>&1; fi
    dk network prune -f >/dev/null 2>&1 || true
  fi
  dk_stop_daemon
  local containerd_pid
  containerd_pid=$(cat "$WORK/exec/containerd/containerd.pid" 2>/dev/null || true)
  if [[ -n "$containerd_pid" ]] && kill -0 "$containerd_pid" 2>/dev/null; then
    kill -TERM "$containerd_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$containerd_pid" 2>/dev/null || true
  fi
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v w="$WORK" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r)
  if [[ $DK_CREATED_DOCKER0 -eq 1 ]] && ip link show docker0 >/dev/null 2>&1; then
    ip link delete docker0 2>/dev/null || true
  fi
  if [[ $DK_FW_SAVED -eq 1 ]] && ! pgrep -x dockerd >/dev/null; then
    # tables dockerd created (nat) are flushed too: restore rewrites only the saved tables
    iptables -t nat -F 2>/dev/null && iptables -t nat -X 2>/dev/null
    iptables -t filter -F 2>/dev/null && iptables -t filter -X 2>/dev/null && iptables -P FORWARD ACCEPT 2>/dev/null
    [[ -s "$WORK/iptables.before" ]] && iptables-restore <"$WORK/iptables.before" 2>/dev/null
    [[ -s "$WORK/ip_forward.before" ]] && sysctl -q -w net.ipv4.ip_forward="$(cat "$WORK/ip_forward.before")" 2>/dev/null
  fi
  return 0
}

# dk_base_image: imports debian:bookworm-slim from the cached tarball, building it first with
# debootstrap --variant=minbase from the host's Debian mirror when the cache has none
dk_base_image() {
  local mirror sources key tarball
  mirror=$(/usr/bin/python3 "$ROOT/tests/deploy/apt_sources.py" mirror) || die "no Debian bookworm mirror in /etc/apt"
  sources=$(/usr/bin/python3 "$ROOT/tests/deploy/apt_sources.py" list)
  key=$(printf '%s\n%s\n%s\n' "$BASE_STAMP" "$mirror" "$sources" | sha256sum | cut -c1-12)
  tarball="$CACHE_DIR/debian-bookworm-minbase-$(dpkg --print-architecture)-$key.tar"
  if [[ ! -s "$tarball" ]]; then
    log "building the base image with debootstrap from $mirror (cached as $tarball)"
    local rootfs="$WORK/rootfs" start=$SECONDS
    timeout -k 10 900 debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 || {
      tail -20 "$WORK/debootstrap.log" >&2
      die "debootstrap failed"
    }
    # like the official slim image: the host's Debian sources, no docs/man/locales installed
    # by later apt-get runs, no package lists or caches in the image
    printf '%s\n' "$sources" >"$rootfs/etc/apt/sources.list"
    # apt settings of the official image (debuerreotype): no package caches, compressed
    # indexes, no translations, so an `apt-get update` layer stays small
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
    echo 'Acquire::GzipIndexes "true";' >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
    mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
      "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
      "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.bash_history
    : >"$rootfs/etc/hostname"
    : >"$rootfs/etc/resolv.conf"
    mkdir -p "$CACHE_DIR"
    rm -f "$CACHE_DIR"/debian-bookworm-minbase-*.tar  # older stamps or mirrors
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp.$$" . && mv "$tarball.tmp.$$" "$tarball"
    rm -rf "$rootfs"
    log "debootstrap + tarball: $((SECONDS - start)) s"
  else
    log "base image from cache: $tarball"
  fi
  dk_t 300 import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' "$tarball" "$BASE_IMAGE" >/dev/null || die "docker import failed"
}

# dk_build_args: --network option for `docker run`/`docker build` in this daemon's mode
dk_build_args() {
  if [[ $DK_NETMODE == host ]]; then echo "--network=host"; fi
}
