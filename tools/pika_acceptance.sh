#!/usr/bin/env bash
# Run pika's own acceptance suite (tests/acceptance) against an AMQP broker on 127.0.0.1:PORT.
#
# usage: tools/pika_acceptance.sh PIKA_CHECKOUT PORT [extra pytest args...]
#
#   PIKA_CHECKOUT  a git checkout of https://github.com/pika/pika (this script never downloads it)
#   PORT           AMQP port of the broker under test (guest/guest, vhost "/")
#
# environment:
#   PIKA_PYTHON        interpreter with pytest, pytest-timeout, pytest-xdist, tornado, twisted, gevent
#                      installed (default: python3); pika itself is imported from PIKA_CHECKOUT
#   PIKA_TEST_TIMEOUT  per-test timeout in seconds (default 60)
#   PIKA_WORKERS       pytest-xdist workers, --dist=loadscope as pika's CI does (default 8; 0 = serial)
#
# pika's acceptance tests hard-code 127.0.0.1:5672. Rather than editing the checkout, a tiny pytest
# plugin written to a temporary directory wraps pika.connection.Parameters.port so that 5672 becomes
# PORT; every broker connection in the suite (including the ForwardServer relays) goes through it.
# Example:
#   python3 -m venv /tmp/pika-venv
#   /tmp/pika-venv/bin/pip install pytest pytest-timeout pytest-xdist tornado twisted gevent
#   PIKA_PYTHON=/tmp/pika-venv/bin/python tools/pika_acceptance.sh /tmp/pika-src 5673 --junitxml=/tmp/r.xml
set -euo pipefail

if [[ $# -lt 2 ]]; then
    sed -n '2,12p' "$0" >&2
    exit 2
fi
checkout=$(cd "$1" && pwd)
port=$2
shift 2
python=${PIKA_PYTHON:-python3}
timeout_s=${PIKA_TEST_TIMEOUT:-60}
workers=${PIKA_WORKERS:-8}

if [[ ! -d $checkout/tests/acceptance || ! -f $checkout/pika/connection.py ]]; then
    echo "error: $checkout is not a pika checkout" >&2
    exit 2
fi
if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: nothing listens on 127.0.0.1:$port" >&2
    exit 2
fi

plugin_dir=$(mktemp -d)
trap 'rm -rf "$plugin_dir"' EXIT
cat >"$plugin_dir/pika_port_remap.py" <<'EOF'
"""pytest plugin: send pika's hard-coded broker port 5672 to $PIKA_ACCEPTANCE_PORT."""

import os

import pika.connection

TARGET = int(os.environ["PIKA_ACCEPTANCE_PORT"])
original = pika.connection.Parameters.port
if not isinstance(original, property) or original.fset is None:
    raise RuntimeError("pika.connection.Parameters.port is no longer a settable property")


def set_port(self, value):
    original.fset(self, value)
    if self.port == 5672:
        original.fset(self, TARGET)


pika.connection.Parameters.port = property(original.fget, set_port, doc=original.__doc__)
EOF

commit=$(git -C "$checkout" rev-parse HEAD 2>/dev/null || echo unknown)
xdist=()
if [[ $workers != 0 ]]; then
    xdist=(-n "$workers" --dist=loadscope)
fi
echo "pika $commit ($checkout), broker 127.0.0.1:$port, $(date -u +%Y-%m-%dT%H:%MZ)"
cd "$checkout"
PIKA_ACCEPTANCE_PORT=$port PYTHONPATH="$plugin_dir:$checkout" "$python" -c \
    'import pika, sys; print("pika", pika.__version__, "from", pika.__file__, "python", sys.version.split()[0])'
PIKA_ACCEPTANCE_PORT=$port PYTHONPATH="$plugin_dir:$checkout" "$python" -m pytest \
    -p pika_port_remap -p no:cacheprovider tests/acceptance \
    -q --timeout="$timeout_s" "${xdist[@]}" -rfE --tb=short "$@"
