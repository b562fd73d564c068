"""Password hashes: new ones with a slow KDF, RabbitMQ's imported ones verified, equal work for all.

Theory of operation: a user stores ``password_hash`` and ``hashing_algorithm``, never the password.

- New hashes (``hashing_algorithm = "leveret_pbkdf2_sha256"``) are PBKDF2-HMAC-SHA256 from
  ``hashlib`` with a 16-byte random salt, stored as ``pbkdf2_sha256$<iterations>$<salt>$<key>``
  (salt and 32-byte derived key in standard base64). The iteration count is part of the hash, so
  raising ``ITERATIONS`` later leaves older hashes valid.
- RabbitMQ's hashes, imported from its definitions, are verified as RabbitMQ does:
  ``base64(salt[4] + H(salt + utf8(password)))`` with H = SHA-256
  (``rabbit_password_hashing_sha256``, its default), SHA-512 or MD5.
- An empty hash matches no password (RabbitMQ: such a user can only log in with EXTERNAL).

Timing: every check costs one PBKDF2 run whatever the outcome: an unknown user is checked against a
dummy hash of the same cost, and a user with a fast RabbitMQ hash pays a dummy PBKDF2 run as well,
so the time to a refusal does not tell whether the user exists. Digests are compared with
``hmac.compare_digest``.

A successful login is remembered (``LoginCache``: an HMAC of user, password and stored hash under a
per-process random key) so a client reconnecting with the same credentials does not pay the KDF
again; a wrong password never hits that cache and always pays the full cost.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections import OrderedDict

PBKDF2 = "leveret_pbkdf2_sha256"
RABBIT_SHA256 = "rabbit_password_hashing_sha256"
RABBIT_SHA512 = "rabbit_password_hashing_sha512"
RABBIT_MD5 = "rabbit_password_hashing_md5"
ALGORITHMS = (PBKDF2, RABBIT_SHA256, RABBIT_SHA512, RABBIT_MD5)
_RABBIT_DIGESTS = {RABBIT_SHA256: "sha256", RABBIT_SHA512: "sha512", RABBIT_MD5: "md5"}

ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256 (about 0.13 s here)
PREFIX = "pbkdf2_sha256"
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAX_ITERATIONS = 10_000_000  # an imported hash may not make every login cost minutes


def hash_password(password: str, iterations: int | None = None, salt: bytes | None = None) -> str:
    """A new ``leveret_pbkdf2_sha256`` hash of ``password`` (``ITERATIONS`` unless told)."""
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    iterations = iterations or ITERATIONS
    key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, _KEY_BYTES)
    return f"{PREFIX}${iterations}${_b64(salt)}${_b64(key)}"


def rabbit_hash(password: str, algorithm: str = RABBIT_SHA256, salt: bytes | None = None) -> str:
    """A hash in RabbitMQ's format (for tests and for exporting to RabbitMQ)."""
    salt = os.urandom(4) if salt is None else salt
    digest = hashlib.new(_RABBIT_DIGESTS[algorithm], salt + password.encode("utf-8")).digest()
    return _b64(salt + digest)


def guess_algorithm(password_hash: str) -> str:
    """For a hash given without its algorithm: ours by its prefix, else RabbitMQ's default (or ours
    for "", no password)."""
    if not password_hash or password_hash.startswith(PREFIX + "$"):
        return PBKDF2
    return RABBIT_SHA256


def validate(password_hash: str, algorithm: str) -> None:
    """Raise ValueError unless ``password_hash`` is well formed for ``algorithm`` ("" is allowed)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unsupported hashing algorithm '{algorithm}'")
    if password_hash and _parse(password_hash, algorithm) is None:
        raise ValueError(f"malformed password hash for {algorithm}")


def verify(password: str, password_hash: str | None, algorithm: str | None) -> bool:
    """Whether ``password`` matches; always one PBKDF2 run of the default cost or more."""
    parsed = _parse(password_hash, algorithm) if password_hash and algorithm else None
    if parsed is None:  # no such user, no password, or a damaged hash: same work, refused
        _dummy(password)
        return False
    digest, salt, iterations, expected = parsed
    raw = password.encode("utf-8")
    if digest == "pbkdf2":
        actual = hashlib.pbkdf2_hmac("sha256", raw, salt, iterations, len(expected))
    else:
        _dummy(password)
        actual = hashlib.new(digest, salt + raw).digest()
    return hmac.compare_digest(actual, expected)


def _dummy(password: str) -> None:
    hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), b"\x00" * _SALT_BYTES, ITERATIONS, _KEY_BYTES)


def _parse(password_hash: str | None, algorithm: str | None) -> tuple[str, bytes, int, bytes] | None:
    """(digest, salt, iterations, expected) or None when malformed."""
    if not password_hash:
        return None
    try:
        if algorithm == PBKDF2:
            prefix, iterations, salt, key = password_hash.split("$")
            count = int(iterations)
            if prefix != PREFIX or not 1 <= count <= _MAX_ITERATIONS:
                return None
            expected = base64.b64decode(key, validate=True)
            return ("pbkdf2", base64.b64decode(salt, validate=True), count, expected) if expected else None
        digest = _RABBIT_DIGESTS.get(algorithm or "")
        if digest is None:
            return None
        raw = base64.b64decode(password_hash, validate=True)
        if len(raw) != 4 + hashlib.new(digest).digest_size:
            return None
        return digest, raw[:4], 0, raw[4:]
    except (ValueError, binascii.Error):
        return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class LoginCache:
    """Successful (user, password, stored hash) triples, as keyed HMACs; bounded, oldest out first."""

    def __init__(self, size: int = 1024) -> None:
        self._key = os.urandom(32)
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._size = size

    def _mac(self, name: str, password: str, password_hash: str) -> bytes:
        msg = b"\x00".join(s.encode("utf-8", "surrogatepass") for s in (name, password, password_hash))
        return hmac.new(self._key, msg, "sha256").digest()

    def hit(self, name: str, password: str, password_hash: str) -> bool:
        mac = self._mac(name, password, password_hash)
        if mac in self._seen:
            self._seen.move_to_end(mac)
            return True
        return False

    def add(self, name: str, password: str, password_hash: str) -> None:
        self._seen[self._mac(name, password, password_hash)] = None
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
