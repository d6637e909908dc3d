#!/usr/bin/env bash
# A throwaway Redis Cluster of three masters on this machine: redis-server in cluster mode on free
# ports, without replicas or persistence, joined by `redis-cli --cluster create`.
#
#   scripts/redis-cluster.sh start DIR   starts it with its files in DIR (created), waits until
#                                        every node says cluster_state:ok, and prints the nodes'
#                                        URLs, comma-separated (REDIS_URL with REDIS_CLUSTER=true)
#   scripts/redis-cluster.sh stop DIR    shuts down the nodes started in DIR and removes DIR
#   scripts/redis-cluster.sh ports DIR   prints their ports, one per line
set -euo pipefail

ACTION="${1:-}"
DIR="${2:-}"
[[ -n "$DIR" ]] || { echo "usage: scripts/redis-cluster.sh start|stop|ports DIR" >&2; exit 2; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ports() { [[ -f "$DIR/ports" ]] && cat "$DIR/ports"; }

case "$ACTION" in
  start)
    mkdir -p "$DIR"
    : >"$DIR/ports"
    for _ in 1 2 3; do
      port="$(free_port)"
      mkdir -p "$DIR/$port"
      echo "$port" >>"$DIR/ports"
      # The bus port is port + 10000 unless set: that one may be taken.
      (cd "$DIR/$port" && redis-server --port "$port" --cluster-port "$(free_port)" --bind 127.0.0.1 \
        --cluster-enabled yes --cluster-config-file nodes.conf --save '' --appendonly no \
        --daemonize yes --loglevel warning --logfile "$DIR/$port/log")
    done
    for port in $(ports); do
      for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    done
    # shellcheck disable=SC2046
    redis-cli --cluster create $(sed 's/^/127.0.0.1:/' "$DIR/ports") --cluster-replicas 0 --cluster-yes >"$DIR/create.log"
    for port in $(ports); do
      for _ in $(seq 300); do
        redis-cli -p "$port" cluster info | grep -q cluster_state:ok && continue 2
        sleep 0.1
      done
      echo "redis-cluster: the node on $port never said cluster_state:ok" >&2
      exit 1
    done
    sed 's|^|redis://127.0.0.1:|' "$DIR/ports" | paste -sd, -
    ;;
  stop)
    for port in $(ports); do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
    rm -rf "$DIR"
    ;;
  ports) ports ;;
  *) echo "usage: scripts/redis-cluster.sh start|stop|ports DIR" >&2; exit 2 ;;
esac
