#!/usr/bin/env bash
# A RabbitMQ node of its own for comparisons and benchmarks: Debian's rabbitmq-server on port 5673,
# node rabbit-cmp@localhost, mnesia and logs under /tmp. Not part of `make test`.
#
#   bash benchmarks/rabbitmq.sh start    # idempotent; returns once the AMQP port answers
#   bash benchmarks/rabbitmq.sh status   # exit 0 if the port answers, 3 if not
#   bash benchmarks/rabbitmq.sh pid      # the broker's OS pid (beam.smp), if known
#   bash benchmarks/rabbitmq.sh stop     # stops the node only if this script started it
#
# Overrides: RMQ_PORT (5673), RMQ_NODE (rabbit-cmp@localhost), RMQ_BASE (/tmp).
set -euo pipefail

PORT=${RMQ_PORT:-5673}
NODE=${RMQ_NODE:-rabbit-cmp@localhost}
BASE=${RMQ_BASE:-/tmp}
MNESIA=$BASE/rmq-mnesia
LOGS=$BASE/rmq-log
MARK=$BASE/rmq-$NODE.started-by-leveret  # holds the pid of the node this script started
START_TIMEOUT=${RMQ_START_TIMEOUT:-90}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

node_pid() {
    local f=$MNESIA/$NODE.pid
    [[ -s $f ]] && echo "$(cat "$f")"
}

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

start() {
    if answers; then
        if [[ -f $MARK ]] && alive "$(cat "$MARK")"; then
            echo "rabbitmq: $NODE already running on port $PORT (started by this script, pid $(cat "$MARK"))"
        else
            echo "rabbitmq: port $PORT already answers (a node started elsewhere; it is left alone)"
        fi
        return 0
    fi
    if ! command -v rabbitmq-server >/dev/null; then
        echo "rabbitmq: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2
        return 1
    fi
    mkdir -p "$BASE"
    if [[ $(id -u) == 0 ]] && id rabbitmq >/dev/null 2>&1; then
        install -d -o rabbitmq -g rabbitmq "$MNESIA" "$LOGS"  # the server runs as user rabbitmq
    else
        mkdir -p "$MNESIA" "$LOGS"
    fi
    echo "rabbitmq: starting $NODE on 127.0.0.1:$PORT (mnesia $MNESIA, logs $LOGS)"
    RABBITMQ_NODE_PORT=$PORT RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODENAME=$NODE \
        RABBITMQ_MNESIA_BASE=$MNESIA RABBITMQ_LOG_BASE=$LOGS \
        rabbitmq-server -detached >/dev/null 2>&1 || true
    local waited=0
    until answers; do
        if ((waited >= START_TIMEOUT * 10)); then
            echo "rabbitmq: port $PORT did not answer within ${START_TIMEOUT}s; see $LOGS" >&2
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    local pid
    pid=$(node_pid || true)
    echo "${pid:-unknown}" >"$MARK"
    echo "rabbitmq: $NODE answers on port $PORT (pid ${pid:-unknown})"
}

stop() {
    if [[ ! -f $MARK ]]; then
        echo "rabbitmq: $NODE was not started by this script; nothing stopped"
        return 0
    fi
    local pid
    pid=$(cat "$MARK")
    if alive "$pid"; then
        echo "rabbitmq: stopping $NODE (pid $pid)"
        rabbitmqctl -n "$NODE" stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
        for _ in $(seq 300); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            echo "rabbitmq: pid $pid still alive after 30 s" >&2
            return 1
        fi
    else
        echo "rabbitmq: $NODE (pid $pid) is not running"
    fi
    rm -f "$MARK"
}

status() {
    local pid
    pid=$(node_pid || true)
    if answers; then
        local who="started elsewhere"
        [[ -f $MARK ]] && alive "$(cat "$MARK")" && who="started by this script"
        echo "rabbitmq: port $PORT answers; node $NODE pid ${pid:-unknown} ($who)"
        return 0
    fi
    echo "rabbitmq: port $PORT does not answer"
    return 3
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
pid) node_pid ;;
*)
    echo "usage: $0 start|stop|status|pid" >&2
    exit 2
    ;;
esac
