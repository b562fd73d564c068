"""Shared fixtures: a real ``leveret serve`` process on a free port for the integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {port} within {timeout} s")


class BrokerProcess:
    """A ``leveret serve`` subprocess; ``url`` is its AMQP URL. Its ZeroMQ door is off unless ``zmq``
    (then on free ports: ``zmq_publish_port``, ``zmq_subscribe_port``, ``zmq_push_port``); its HTTP
    door likewise unless ``http`` (then ``http_port``, ``http_url``)."""

    def __init__(
        self, data_dir: Path, *extra: str, env: dict[str, str] | None = None, zmq: bool = False, http: bool = False
    ) -> None:
        self.port = free_port()
        self.http_port = free_port() if http else 0
        self.zmq_publish_port, self.zmq_subscribe_port, self.zmq_push_port = (
            (free_port(), free_port(), free_port()) if zmq else (0, 0, 0)
        )
        self.data_dir = data_dir
        self.log_path = data_dir / "broker.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        env = self._env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "leveret",
                "serve",
                "--host",
                "127.0.0.1",
                "--amqp-port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--zmq-publish-port",
                str(self.zmq_publish_port),
                "--zmq-subscribe-port",
                str(self.zmq_subscribe_port),
                "--zmq-push-port",
                str(self.zmq_push_port),
                "--http-port",
                str(self.http_port),
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_for_port(self.port, self.proc)
        if self.http_port:
            wait_for_port(self.http_port, self.proc)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def restart(self, kill: bool = False) -> None:
        """Stop (SIGTERM; SIGKILL with ``kill``) and start again: same port, same data dir, same flags."""
        if kill and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop()
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self.proc.args, stdout=self._log, stderr=subprocess.STDOUT, env=self._env)
        wait_for_port(self.port, self.proc)
        if self.http_port:
            wait_for_port(self.http_port, self.proc)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the whole test session (tests use unique queue names)."""
    proc = BrokerProcess(tmp_path_factory.mktemp("broker"))
    yield proc
    proc.stop()


@pytest.fixture
def amqp_port(broker: BrokerProcess) -> int:
    return broker.port


@pytest.fixture
def amqp_url(broker: BrokerProcess) -> str:
    return broker.url


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker of the test's own (for tests that need an empty one or stop it)."""
    proc = BrokerProcess(tmp_path / "broker")
    yield proc
    proc.stop()


@pytest.fixture
def unique() -> str:
    """A name unique to this test, for queues and exchanges on the shared broker."""
    return "t-" + os.urandom(6).hex()
