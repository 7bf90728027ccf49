#!/bin/bash
# aria2_seed.sh TORRENT DATA_DIR BIND_IP PEER_PORT WORK_DIR [OPTIONS]
#
# Runs aria2c (Debian aria2 1.36) as a SEEDER of TORRENT whose complete data
# already lies in DATA_DIR (DATA_DIR/<name> as in the torrent). Run it inside
# a private network namespace (shared/netns-run).
#
#   TORRENT     the .torrent file
#   DATA_DIR    directory holding the data (aria2's --dir)
#   BIND_IP     127.0.0.x address: aria2 listens on it and its outgoing
#               connections (tracker announces included) come from it
#   PEER_PORT   TCP port for incoming peer connections
#   WORK_DIR    a temp dir for HOME and the log (caller creates/removes it)
# Options:
#   --no-tracker       never announce (peers must connect to BIND_IP:PEER_PORT)
#   --unverified       skip the hash check (--bt-seed-unverified)
#   --upload-limit B   upload limit in bytes/s (default: unlimited)
#   --require-crypto   MSE with RC4 only, both ways (--bt-require-crypto=true
#                      --bt-min-crypto-level=arc4)
#   --ready-timeout S  give up (exit 3) if not seeding after S s (default 120)
#
# aria2 seeds with or without a reachable tracker. Prints READY on stdout
# once aria2 has verified the data, listens on PEER_PORT, reports SEED and
# got its first tracker response (or error, or 10 s passed), then waits.
# SIGTERM/SIGINT/exit stop aria2. Logs: WORK_DIR/aria2.log, aria2-info.log.
# Exit status: 0 after SIGTERM/SIGINT, 2 bad usage / aria2 failed to start,
# 3 not seeding in time (e.g. data incomplete: aria2 would start downloading).
set -u

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2; }
[ $# -ge 5 ] || usage
TORRENT=$(readlink -f "$1"); DATA_DIR=$(readlink -f "$2"); BIND_IP=$3
PEER_PORT=$4; WORK=$(readlink -f "$5"); shift 5
EXTRA=(); READY_TIMEOUT=120; NO_TRACKER=0; VERIFY=(--check-integrity=true)
while [ $# -gt 0 ]; do
  case $1 in
    --no-tracker) EXTRA+=("--bt-exclude-tracker=*"); NO_TRACKER=1; shift ;;
    --unverified) VERIFY=(--bt-seed-unverified=true); shift ;;
    --upload-limit) EXTRA+=("--max-upload-limit=$2"); shift 2 ;;
    --require-crypto) EXTRA+=(--bt-require-crypto=true --bt-min-crypto-level=arc4); shift ;;
    --ready-timeout) READY_TIMEOUT=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ -f "$TORRENT" ] && [ -d "$DATA_DIR" ] || { echo "no torrent or data dir" >&2; exit 2; }
mkdir -p "$WORK" || exit 2
export HOME=$WORK
LOG=$WORK/aria2.log
INFO=$WORK/aria2-info.log
log() { echo "aria2_seed: $*" >&2; }

APID=
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$APID" ] && kill -0 "$APID" 2>/dev/null; then
    kill "$APID" 2>/dev/null
    # aria2 sends "stopped" to the tracker on the first signal; a second
    # signal makes it quit at once
    for _ in $(seq 30); do kill -0 "$APID" 2>/dev/null || break; sleep 0.1; done
    kill "$APID" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$APID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$APID" 2>/dev/null
    wait "$APID" 2>/dev/null
  fi
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

# --seed-ratio=0.0 without --seed-time: seed until killed.
# --summary-interval=1 prints "[#gid SEED(...)...]" lines used below.
aria2c --no-conf --dir="$DATA_DIR" \
  --interface="$BIND_IP" --listen-port="$PEER_PORT" \
  --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
  --enable-peer-exchange=false --disable-ipv6=true \
  --seed-ratio=0.0 "${VERIFY[@]}" --bt-hash-check-seed=true \
  --file-allocation=none \
  --bt-tracker-connect-timeout=3 --bt-tracker-timeout=5 \
  --bt-max-peers=0 --summary-interval=1 --console-log-level=notice \
  --enable-color=false --show-console-readout=false \
  --log="$INFO" --log-level=info \
  "${EXTRA[@]}" "$TORRENT" >"$LOG" 2>&1 </dev/null &
APID=$!

deadline=$(( $(date +%s) + READY_TIMEOUT ))
while :; do
  if [ -z "${seeding_since:-}" ] && grep -q "listening on TCP port $PEER_PORT" "$LOG" \
     && grep -q 'SEED(' "$LOG"; then
    seeding_since=$(date +%s)
  fi
  if [ -n "${seeding_since:-}" ]; then
    # first announce answered (DefaultBtAnnounce logs the reply) or failed
    [ $NO_TRACKER = 1 ] && break
    grep -q 'DefaultBtAnnounce.cc' "$INFO" 2>/dev/null && break
    grep -q 'Download aborted. URI=http' "$LOG" && break
    [ $(( $(date +%s) - seeding_since )) -ge 10 ] && break
  fi
  kill -0 "$APID" 2>/dev/null || { log "aria2 exited:"; tail -20 "$LOG" >&2; exit 2; }
  if [ "$(date +%s)" -ge $deadline ]; then
    log "not seeding after ${READY_TIMEOUT}s"; tail -20 "$LOG" >&2; exit 3
  fi
  sleep 0.1
done
log "seeding $TORRENT from $DATA_DIR on $BIND_IP:$PEER_PORT"
echo READY

wait "$APID"
rc=$?
APID=
exit $rc
