#!/bin/bash
# transmission_leech.sh TORRENT DATA_DIR BIND_IP PEER_PORT CONFIG_DIR [OPTIONS]
#
# Runs Transmission 3.00 (transmission-daemon, Debian package) as a LEECHER of
# TORRENT into DATA_DIR, and exits 0 (printing DONE) once it has all of it.
# Made from transmission_seed.sh; same settings. Transmission never dials
# 127.x peers: the seeder must connect to BIND_IP:PEER_PORT (e.g. after
# finding it at the tracker). Run it inside a private network namespace.
#
#   TORRENT     the .torrent file
#   DATA_DIR    directory holding the data (becomes Transmission's download dir)
#   BIND_IP     127.0.0.x address for the peer listener and the RPC server
#               (outgoing tracker announces also come from it)
#   PEER_PORT   TCP port for incoming peer connections
#   CONFIG_DIR  an empty temp dir for Transmission's settings and state;
#               the caller creates and removes it (also used as HOME)
# Options:
#   --rpc-port N       RPC port on BIND_IP (default 9091)
#   --no-tracker       remove the .torrent's trackers before starting, so it
#                      never announces (peers must connect to BIND_IP:PEER_PORT)
#   --upload-limit K   upload limit in KB/s (default: unlimited)
#   --encryption N     settings.json "encryption": 0 prefer plaintext,
#                      1 prefer encryption (Transmission's default), 2 require
#   --ready-timeout S  give up (exit 3) if not seeding after S s (default 120)
#
# Prints READY on stdout once the torrent is 100% verified and seeding and
# its first announce got an answer or an error (or 10 s passed), then waits.
# SIGTERM/SIGINT/exit stop the daemon. Logs go to CONFIG_DIR/daemon.log.
# Transmission never dials 127.x peers itself, but it accepts incoming ones: a
# leecher must connect to BIND_IP:PEER_PORT (directly or via the tracker).
# Exit status: 0 after SIGTERM/SIGINT, 2 bad usage / daemon failed to start,
# 3 not seeding in time (e.g. data incomplete), else the daemon's status.
set -u

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2; }
[ $# -ge 5 ] || usage
TORRENT=$(readlink -f "$1"); DATA_DIR=$(readlink -f "$2"); BIND_IP=$3
PEER_PORT=$4; CFG=$(readlink -f "$5"); shift 5
RPC_PORT=9091; NO_TRACKER=0; UP_LIMIT=0; READY_TIMEOUT=120; ENCRYPTION=1
while [ $# -gt 0 ]; do
  case $1 in
    --rpc-port) RPC_PORT=$2; shift 2 ;;
    --no-tracker) NO_TRACKER=1; shift ;;
    --upload-limit) UP_LIMIT=$2; shift 2 ;;
    --encryption) ENCRYPTION=$2; shift 2 ;;
    --ready-timeout) READY_TIMEOUT=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ -f "$TORRENT" ] && [ -d "$DATA_DIR" ] || { echo "no torrent or data dir" >&2; exit 2; }
mkdir -p "$CFG" || exit 2
export HOME=$CFG

log() { echo "transmission_seed: $*" >&2; }
RPC="$BIND_IP:$RPC_PORT"
tr_remote() { transmission-remote "$RPC" "$@"; }

HASH=$(transmission-show "$TORRENT" | sed -n 's/^  Hash: //p')
[ -n "$HASH" ] || { echo "cannot read info-hash of $TORRENT" >&2; exit 2; }

if [ "$UP_LIMIT" -gt 0 ]; then UP_ENABLED=true; else UP_ENABLED=false; UP_LIMIT=100; fi
if [ $NO_TRACKER = 1 ]; then START_ADDED=false; else START_ADDED=true; fi
cat > "$CFG/settings.json" <<EOF
{
  "bind-address-ipv4": "$BIND_IP",
  "bind-address-ipv6": "::1",
  "peer-port": $PEER_PORT,
  "peer-port-random-on-start": false,
  "encryption": $ENCRYPTION,
  "port-forwarding-enabled": false,
  "dht-enabled": false,
  "lpd-enabled": false,
  "pex-enabled": false,
  "utp-enabled": false,
  "blocklist-enabled": false,
  "download-dir": "$DATA_DIR",
  "incomplete-dir-enabled": false,
  "rename-partial-files": false,
  "start-added-torrents": $START_ADDED,
  "trash-original-torrent-files": false,
  "ratio-limit-enabled": false,
  "idle-seeding-limit-enabled": false,
  "speed-limit-up": $UP_LIMIT,
  "speed-limit-up-enabled": $UP_ENABLED,
  "speed-limit-down-enabled": false,
  "alt-speed-enabled": false,
  "alt-speed-time-enabled": false,
  "seed-queue-enabled": false,
  "download-queue-enabled": false,
  "queue-stalled-enabled": false,
  "peer-limit-global": 500,
  "peer-limit-per-torrent": 100,
  "cache-size-mb": 16,
  "rpc-enabled": true,
  "rpc-bind-address": "$BIND_IP",
  "rpc-port": $RPC_PORT,
  "rpc-authentication-required": false,
  "rpc-whitelist-enabled": false,
  "rpc-host-whitelist-enabled": false,
  "message-level": 2
}
EOF

DPID=
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
    kill "$DPID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DPID" 2>/dev/null
    wait "$DPID" 2>/dev/null
  fi
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

transmission-daemon --foreground --config-dir "$CFG" --logfile "$CFG/daemon.log" \
  >"$CFG/daemon.out" 2>&1 </dev/null &
DPID=$!

for _ in $(seq 100); do
  tr_remote -l >/dev/null 2>&1 && break
  kill -0 "$DPID" 2>/dev/null || { log "daemon died:"; cat "$CFG/daemon.out" >&2; exit 2; }
  sleep 0.1
done
tr_remote -a "$TORRENT" -w "$DATA_DIR" >/dev/null || { log "add failed"; exit 2; }

if [ $NO_TRACKER = 1 ]; then
  # added paused (start-added-torrents=false); drop every tracker, then start
  for id in $(tr_remote -t "$HASH" -it | sed -n 's/^ *Tracker \([0-9]*\):.*/\1/p'); do
    tr_remote -t "$HASH" -tr "$id" >/dev/null || log "could not remove tracker $id"
  done
  tr_remote -t "$HASH" -s >/dev/null
fi

deadline=$(( $(date +%s) + READY_TIMEOUT ))
announced=0
while :; do
  info=$(tr_remote -t "$HASH" -i 2>/dev/null)
  done_pct=$(printf '%s\n' "$info" | sed -n 's/^ *Percent Done: //p')
  if [ $announced = 0 ] && tr_remote -t "$HASH" -it | grep -qE 'Got a list of|Got an error'; then
    announced=1
    echo ANNOUNCED
  fi
  [ "$done_pct" = "100%" ] && break
  kill -0 "$DPID" 2>/dev/null || { log "daemon died"; exit 2; }
  if [ "$(date +%s)" -ge $deadline ]; then
    log "not complete after ${READY_TIMEOUT}s: done=$done_pct"
    exit 3
  fi
  sleep 0.2
done
log "complete: $HASH in $DATA_DIR"
echo DONE
exit 0
