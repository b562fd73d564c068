"""CRC-32C (Castagnoli), the checksum of every stored record.

The ``crc32c`` package computes it in C (with SSE4.2/ARMv8 instructions where the CPU has them, about
GB/s). If that package cannot be imported, a table-driven pure-Python version takes over: the same
values, much slower, but the broker still starts and still detects corruption.
Check value: ``crc32c(b"123456789") == 0xE3069283``.
"""

from __future__ import annotations

from collections.abc import Callable

_POLY = 0x82F63B78  # the Castagnoli polynomial, bit-reversed


def _make_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _make_table()


def crc32c_python(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C of ``data`` continuing from ``value``, in pure Python (the fallback)."""
    table = _TABLE
    c = value ^ 0xFFFFFFFF
    for byte in memoryview(data).cast("B"):
        c = table[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


Checksum = Callable[[bytes | bytearray | memoryview], int]


def _load() -> tuple[Checksum, bool]:
    try:
        from crc32c import crc32c as fast
    except ImportError:  # pragma: no cover - the package is a declared dependency
        return crc32c_python, False
    return fast, True


# Bound directly (no wrapper) because it runs once per stored message on the publish path.
crc32c: Checksum
crc32c, ACCELERATED = _load()
