#!/bin/bash
# aria2_leech.sh TORRENT OUT_DIR BIND_IP PEER_PORT WORK_DIR [OPTIONS]
#
# Runs aria2c (Debian aria2 1.36) as a LEECHER of TORRENT into OUT_DIR and
# exits when the download is done (--seed-time=0). Run it inside a private
# network namespace (shared/netns-run).
#
#   TORRENT     the .torrent file, or a magnet link
#   OUT_DIR     where the data goes (aria2's --dir)
#   BIND_IP     127.0.0.x address: aria2 listens on it and its outgoing
#               connections (tracker announces included) come from it
#   PEER_PORT   TCP port for incoming peer connections
#   WORK_DIR    a temp dir for HOME and the logs (caller creates/removes it)
# Options:
#   --udp-trackers  make udp:// trackers work: aria2 1.36 runs its UDP
#                   tracker client only when its DHT is on ("Enable IPv4
#                   DHT functionality. It also enables UDP tracker
#                   support"), so this turns the DHT on, on UDP port
#                   PEER_PORT of BIND_IP, with no entry point and an empty
#                   routing table (WORK_DIR/dht.dat): it knows no node to
#                   bootstrap from, so at most it talks to loopback peers
#                   it meets. Without this flag the DHT is off.
#   --timeout S     give up (exit 1) after S seconds (default 120)
#   --require-crypto  MSE with RC4 only, both ways (--bt-require-crypto=true
#                   --bt-min-crypto-level=arc4)
#
# After aria2 exits, prints one line per tracker announce it sent, from its
# info log, on stdout: `ANNOUNCE <event> <left>` (event: started,
# completed, stopped or none; left: bytes left as sent), then exits with
# aria2's status (0: download complete). Logs: WORK_DIR/aria2.log (console)
# and WORK_DIR/aria2-info.log. Exit 2 on bad usage.
set -u

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2; }
[ $# -ge 5 ] || usage
case $1 in
  magnet:*) TORRENT=$1 ;;
  *) TORRENT=$(readlink -f "$1") ;;
esac
OUT_DIR=$(readlink -f "$2"); BIND_IP=$3
PEER_PORT=$4; WORK=$(readlink -f "$5"); shift 5
TIMEOUT=120
DHT=(--enable-dht=false)
CRYPTO=()
while [ $# -gt 0 ]; do
  case $1 in
    --udp-trackers)
      DHT=(--enable-dht=true "--dht-listen-port=$PEER_PORT"
           "--dht-file-path=$WORK/dht.dat"); shift ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --require-crypto) CRYPTO=(--bt-require-crypto=true --bt-min-crypto-level=arc4); shift ;;
    *) usage ;;
  esac
done
case $TORRENT in
  magnet:*) ;;
  *) [ -f "$TORRENT" ] || { echo "no torrent $TORRENT" >&2; exit 2; } ;;
esac
mkdir -p "$WORK" "$OUT_DIR" || exit 2
export HOME=$WORK
INFO=$WORK/aria2-info.log

timeout --signal=TERM --kill-after=5 "$TIMEOUT" \
  aria2c --no-conf --dir="$OUT_DIR" \
  --interface="$BIND_IP" --listen-port="$PEER_PORT" \
  "${DHT[@]}" --enable-dht6=false --bt-enable-lpd=false \
  --enable-peer-exchange=false --disable-ipv6=true \
  --seed-time=0 --check-integrity=true --file-allocation=none \
  --bt-tracker-connect-timeout=3 --bt-tracker-timeout=5 \
  --summary-interval=0 --console-log-level=warn --enable-color=false \
  --log="$INFO" --log-level=info "${CRYPTO[@]}" \
  "$TORRENT" >"$WORK/aria2.log" 2>&1 </dev/null
rc=$?
[ $rc -eq 124 ] && { echo "aria2_leech: timeout after ${TIMEOUT}s" >&2; rc=1; }

# HTTP: the request line "GET /announce?...&left=N...&event=E..." (no event
# parameter for a regular announce); UDP: "UDPT sent ANNOUNCE ... event=E".
# UDP lines carry no `left`: "-" is printed there.
sed -n -e 's/.*GET [^ ]*[?&]left=\([0-9]*\)[^ ]*[?&]event=\([a-z]*\).*/ANNOUNCE \2 \1/p' \
       -e '/GET [^ ]*announce?/{/[?&]event=/!s/.*[?&]left=\([0-9]*\).*/ANNOUNCE none \1/p}' \
       -e 's/.*UDPT sent ANNOUNCE .* event=\([A-Z]*\).*/ANNOUNCE \L\1\E -/p' "$INFO"
exit $rc
