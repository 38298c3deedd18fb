"""Tag bytes and limits of the External Term Format (``erts/doc/src/erl_ext_dist.xml``)."""

from __future__ import annotations

VERSION = 131

COMPRESSED = 80
ATOM_CACHE_REF = 82
NEW_PID = 88
NEW_PORT = 89
NEWER_REFERENCE = 90
NEW_FLOAT = 70
BIT_BINARY = 77
SMALL_INTEGER = 97
INTEGER = 98
FLOAT = 99
ATOM = 100
REFERENCE = 101
PORT = 102
PID = 103
SMALL_TUPLE = 104
LARGE_TUPLE = 105
NIL = 106
STRING = 107
LIST = 108
BINARY = 109
SMALL_BIG = 110
LARGE_BIG = 111
NEW_FUN = 112
EXPORT = 113
NEW_REFERENCE = 114
SMALL_ATOM = 115
MAP = 116
FUN = 117
ATOM_UTF8 = 118
SMALL_ATOM_UTF8 = 119
V4_PORT = 120
LOCAL = 121

NAMES: dict[int, str] = {
    value: f"{name}_EXT"
    for name, value in globals().items()
    if name.isupper() and isinstance(value, int) and name != "VERSION"
}
NAMES[ATOM_CACHE_REF] = "ATOM_CACHE_REF"

MAX_ATOM_CHARS = 255
MAX_REFERENCE_WORDS = 5
# The largest integer the VM builds is 2**33_554_368 - 1 (OTP 25, 64-bit).
MAX_BIG_BYTES = 4_194_296


def name(tag: int) -> str:
    """``SMALL_TUPLE_EXT (104)`` for a known tag, ``unknown tag 7`` otherwise."""
    known = NAMES.get(tag)
    return f"{known} ({tag})" if known else f"unknown tag {tag}"
