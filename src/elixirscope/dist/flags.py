"""Distribution capability flags exchanged in the handshake (erl_dist_protocol, "flags")."""

from __future__ import annotations

PUBLISHED = 0x1
ATOM_CACHE = 0x2
EXTENDED_REFERENCES = 0x4
DIST_MONITOR = 0x8
FUN_TAGS = 0x10
DIST_MONITOR_NAME = 0x20
HIDDEN_ATOM_CACHE = 0x40
NEW_FUN_TAGS = 0x80
EXTENDED_PIDS_PORTS = 0x100
EXPORT_PTR_TAG = 0x200
BIT_BINARIES = 0x400
NEW_FLOATS = 0x800
UNICODE_IO = 0x1000
DIST_HDR_ATOM_CACHE = 0x2000
SMALL_ATOM_TAGS = 0x4000
UTF8_ATOMS = 0x10000
MAP_TAG = 0x20000
BIG_CREATION = 0x40000
SEND_SENDER = 0x80000
BIG_SEQTRACE_LABELS = 0x100000
EXIT_PAYLOAD = 0x400000
FRAGMENTS = 0x800000
HANDSHAKE_23 = 0x1000000
UNLINK_ID = 0x2000000
MANDATORY_25_DIGEST = 0x4000000
SPAWN = 1 << 32
NAME_ME = 1 << 33
V4_NC = 1 << 34
ALIAS = 1 << 35

MANDATORY_OTP25 = (
    EXTENDED_REFERENCES | FUN_TAGS | EXTENDED_PIDS_PORTS | UTF8_ATOMS | NEW_FUN_TAGS
    | BIG_CREATION | NEW_FLOATS | MAP_TAG | EXPORT_PTR_TAG | BIT_BINARIES | HANDSHAKE_23
)
MANDATORY_OTP26 = MANDATORY_OTP25 | V4_NC | UNLINK_ID

# What we offer. PUBLISHED is absent: we are a hidden node, invisible to nodes() and
# never part of the target's global name registry. No atom cache, no fragments and no
# spawn: the node then sends us every message whole, in the plain `p` form.
OURS = (
    MANDATORY_OTP26
    | MANDATORY_25_DIGEST
    | DIST_MONITOR
    | DIST_MONITOR_NAME
    | SMALL_ATOM_TAGS
    | UNICODE_IO
    | BIG_SEQTRACE_LABELS
)

_NAMES = {value: name for name, value in dict(globals()).items()
          if name.isupper() and isinstance(value, int) and value & (value - 1) == 0}


def describe(flags: int) -> list[str]:
    """The names of the flags set in ``flags``, lowest bit first."""
    return [_NAMES.get(1 << bit, f"BIT{bit}") for bit in range(64) if flags >> bit & 1]
