"""Crash cascades and restart storms: the first crash, the exits it propagated through
links, the crashes that followed a monitor's ``:DOWN``, the supervisor restarts that
followed against the supervisor's intensity, and the message that triggered the first
crash, with its sender.

Crashes close together (each within ``GAP`` seconds of the one before) are one
cascade. A process that took the registered name or the initial call of a crashed
process from the same parent is its restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from elixirscope.diagnosis.finding import Evidence, Finding
from elixirscope.elixir_format import inspect
from elixirscope.errors import ETFDecodeError, QueryError
from elixirscope.etf import Atom, Pid
from elixirscope.recording.results import Event, Process, payload_value, shorten

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

GAP = 5.0


@dataclass
class _Supervisor:
    name: str
    intensity: tuple[int, int] | None  # (restarts, seconds) as its init/1 returned
    exited: float | None


def detect(rec: RecordingQueries) -> list[Finding]:
    crashes = rec.crashes()
    if not crashes:
        return []
    processes = {process.pid_id: process for process in rec.processes()}
    findings = []
    for group in _cascades(crashes):
        findings.append(_finding(rec, group, processes))
    return findings


def _cascades(crashes: list[Event]) -> list[list[Event]]:
    groups: list[list[Event]] = []
    for crash in crashes:
        if groups and crash.time - groups[-1][-1].time <= GAP:
            groups[-1].append(crash)
        else:
            groups.append([crash])
    return groups


def _finding(rec: RecordingQueries, group: list[Event],
             processes: dict[int, Process]) -> Finding:
    first = group[0]
    reason = _reason(first)
    who = _label(first, processes)
    raised = rec.fatal(first)
    where = f"{raised.event.mfa} in {who}" if raised and raised.event.mfa else who
    trigger, sender, evidence_messages = _trigger(rec, raised.event if raised else None)
    start, end = first.time, group[-1].time
    restarted = _restarts(group, processes)
    restarts = sum(len(pids) for pids in restarted.values())
    supervisor = _supervisor(rec, restarted, processes)
    crashed_pids = {crash.pid_id for crash in group}
    keys = {crash.seq: _key(processes.get(crash.pid_id)) for crash in group}
    first_key = keys[first.seq]
    own = [crash for crash in group if keys[crash.seq] == first_key or keys[crash.seq] in
           restarted]
    propagated = [crash for crash in group if crash not in own]
    parts = [f"{where} {'raised' if raised else 'exited with'} {reason}"]
    if trigger:
        parts[0] += f" on {trigger}" + (f" from {sender}" if sender else "")
    severity = "error"
    if restarts:
        names = ", ".join(sorted(restarted))
        storm = (f"{names} was restarted" if len(own) == 1 else
                 f"{names} crashed {len(own)} times and was restarted {restarts} "
                 f"time{'s' if restarts != 1 else ''} in {end - start:.2g} s")
        if supervisor is not None:
            if supervisor.intensity is not None:
                allowed, period = supervisor.intensity
                storm += f" ({supervisor.name} allows {allowed} in {period} s)"
                if restarts > allowed:
                    severity = "critical"
            if supervisor.exited is not None:
                storm += f", then {supervisor.name} gave up and exited"
                severity = "critical"
        parts.append(storm)
    linked, downed, other = _how_they_died(rec, own, propagated)
    them = "them" if len(own) > 1 else "it"
    if linked:
        parts.append(f"{_count(linked, 'linked process')} died with {them}")
    if downed:
        parts.append(f"{_count(downed, 'process', 'es')} monitoring {them} crashed after "
                     f"the :DOWN")
    if other:
        parts.append(f"{_count(other, 'other process', 'es')} crashed meanwhile")
    kind_of = "Restart storm" if restarts > 1 else "Crash cascade" if len(group) > 1 \
        else "Crash"
    title = f"{kind_of}: " + "; ".join(parts)
    details = [f"{crash.time:.3f} s {_label(crash, processes)} exited: "
               f"{shorten(crash.text, 120)}" for crash in group[:20]]
    if len(group) > 20:
        details.append(f"… and {len(group) - 20} more exits")
    return Finding(
        kind="crash_cascade", title=title, severity=severity, start=start,
        end=end if end > start else None,
        processes=tuple(dict.fromkeys(_label(crash, processes) for crash in group)),
        evidence=Evidence(events=tuple(crash.seq for crash in group[:200]),
                          spans=(raised.event.span_id,) if raised and raised.event.span_id
                          else (),
                          messages=evidence_messages),
        next_commands=(f"elixirscope traceback REC {raised.event.seq if raised else first.seq}",
                       "elixirscope supervisors REC",
                       f"elixirscope query REC --kind exit --since {start:.3f}"),
        details=tuple(details), weight=float(len(crashed_pids) + restarts))


def _count(items: list[Event], noun: str, plural: str = "es") -> str:
    return f"{len(items)} {noun}{plural if len(items) != 1 else ''}"


def _how_they_died(rec: RecordingQueries, own: list[Event], others: list[Event]
                   ) -> tuple[list[Event], list[Event], list[Event]]:
    """The other exits of a cascade, as the recording shows they followed the crashes:
    through a link (the same exit reason, which an exit signal carries, or a recorded
    link), after a monitor's ``{:DOWN, ...}`` about a crashed process received first,
    or neither (they crashed meanwhile, for all the recording shows)."""
    reasons = {_reason(crash) for crash in own}
    crashed = {crash.pid for crash in own} | {
        name for crash in own for name in rec.dims.names.get(crash.pid_id, ())}
    crashed_ids = {crash.pid_id for crash in own}
    linked_ids = {other for pid_id, other in rec.con.execute(
        "SELECT pid_id, other_pid_id FROM links WHERE pid_id IN (SELECT unnest(?::INTEGER[]))",
        [sorted(crashed_ids)]).fetchall()} if crashed_ids else set()
    linked, downed, other = [], [], []
    for crash in others:
        if _reason(crash) in reasons or crash.pid_id in linked_ids:
            linked.append(crash)
        elif _got_down(rec, crash, crashed):
            downed.append(crash)
        else:
            other.append(crash)
    return linked, downed, other


def _got_down(rec: RecordingQueries, crash: Event, crashed: set[str]) -> bool:
    """Whether the process received a ``{:DOWN, _, :process, What, _}`` about one of
    the ``crashed`` processes (a pid, or ``{name, node}`` for a monitor by name) before
    its own exit."""
    for (payload,) in rec.con.execute(
            "SELECT payload FROM events WHERE pid_id = ? AND kind = 6 AND seq < ? "
            "ORDER BY seq DESC LIMIT 50", [crash.pid_id, crash.seq]).fetchall():
        try:
            value = payload_value(bytes(payload))
        except ETFDecodeError:
            continue
        if not (isinstance(value, tuple) and len(value) == 5 and value[0] == Atom("DOWN")):
            continue
        what = value[3]
        if isinstance(what, Pid) and f"#PID<0.{what.id}.{what.serial}>" in crashed:
            return True
        if (isinstance(what, tuple) and len(what) == 2 and isinstance(what[0], Atom)
                and inspect(what[0]) in crashed):
            return True
    return False


def _reason(crash: Event) -> str:
    """The exit reason without its stack: ``:badarith`` for ``{:badarith, [...]}``."""
    try:
        value: Any = payload_value(crash.payload)
    except ETFDecodeError:
        return crash.text
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], list):
        value = value[0]
    return shorten(inspect(value, local_node=crash.node), 80)


def _label(event: Event, processes: dict[int, Process]) -> str:
    process = processes.get(event.pid_id)
    if process is not None and process.names:
        return process.names[0]
    return event.pid_name or event.pid


def _trigger(rec: RecordingQueries, raised: Event | None
             ) -> tuple[str | None, str | None, tuple[int, ...]]:
    """The message that started the call that raised, and who sent it."""
    if raised is None or raised.span_id is None:
        return None, None, ()
    outer = rec.stack(raised)[-1] if rec.stack(raised) else None
    if outer is None or outer.trigger_message_id is None:
        if outer is not None and outer.function.startswith("handle_"):
            return shorten(outer.args.split(", ")[0].lstrip("["), 80), None, ()
        return None, None, ()
    message = rec.message_by_id(outer.trigger_message_id)
    if message is None:
        return None, None, ()
    sender = message.sender_name or message.sender
    return _request(message.payload, message.text), sender, (message.message_id,)


def _request(payload: bytes, text: str) -> str:
    """A message as a person names it: ``the call {:withdraw, 10}`` for a
    ``GenServer.call`` (its ref and reply address left out), ``the cast ...``."""
    try:
        value = payload_value(payload)
    except ETFDecodeError:
        return shorten(text, 80)
    if isinstance(value, tuple) and len(value) == 3 and value[0] == Atom("$gen_call"):
        return f"the call {shorten(inspect(value[2]), 80)}"
    if isinstance(value, tuple) and len(value) == 2 and value[0] == Atom("$gen_cast"):
        return f"the cast {shorten(inspect(value[1]), 80)}"
    return shorten(text, 80)


def _key(process: Process | None) -> str | None:
    """What a child is known by across restarts: its name, else its initial call."""
    if process is None:
        return None
    return process.names[0] if process.names else process.initial_call


def _restarts(group: list[Event], processes: dict[int, Process]) -> dict[str, list[int]]:
    """Per crashed child (its name or initial call), the processes started in its place
    during the cascade: same name or initial call, same parent."""
    start, end = group[0].time, group[-1].time + GAP
    restarted: dict[str, list[int]] = {}
    for crash in group:
        dead = processes.get(crash.pid_id)
        key = _key(dead)
        if dead is None or key is None:
            continue
        for process in processes.values():
            if (process.pid_id != dead.pid_id and process.spawned is not None
                    and start <= process.spawned <= end
                    and process.spawned >= crash.time
                    and (key in process.names or process.initial_call == key)
                    and (dead.parent is None or process.parent == dead.parent)):
                pids = restarted.setdefault(key, [])
                if process.pid_id not in pids:
                    pids.append(process.pid_id)
                break
    return restarted


def _supervisor(rec: RecordingQueries, restarted: dict[str, list[int]],
                processes: dict[int, Process]) -> _Supervisor | None:
    parents = {processes[pid_id].parent for pids in restarted.values() for pid_id in pids
               if processes[pid_id].parent}
    if len(parents) != 1:
        return None
    parent = next(iter(parents))
    found = next((p for p in processes.values() if p.pid == parent), None)
    if found is None:
        return None
    return _Supervisor(name=found.names[0] if found.names else found.pid,
                       intensity=_intensity(rec, found), exited=found.exited)


def _intensity_in_state(rec: RecordingQueries, supervisor: Process
                        ) -> tuple[int, int] | None:
    try:
        history = rec.state_history(supervisor.pid_id, limit=1)
    except QueryError:
        return None
    state = history[0].state if history and history[0].known else None
    if not (isinstance(state, tuple) and state and isinstance(state[0], Atom)):
        return None
    records = (rec.meta.get("records") or {}).get(supervisor.node) or []
    for name, size, fields in records:
        if name == str(state[0]) and size == len(state) and {"intensity", "period"} <= set(
                fields):
            intensity = state[1 + fields.index("intensity")]
            period = state[1 + fields.index("period")]
            if isinstance(intensity, int) and isinstance(period, int):
                return (intensity, period)
    return None


def _intensity(rec: RecordingQueries, supervisor: Process) -> tuple[int, int] | None:
    """The supervisor's restart intensity: from its recorded state (a #state{} record
    whose fields the node's debug info named), else from what its init/1 returned."""
    from_state = _intensity_in_state(rec, supervisor)
    if from_state is not None:
        return from_state
    try:
        spans = rec.spans(function="init/1", pid=supervisor.pid_id, limit=5)
    except QueryError:  # no init/1 in the recording: no intensity
        return None
    for span in spans:
        try:
            result = payload_value(span.result_payload) if span.result_payload else None
        except ETFDecodeError:
            continue
        if not (isinstance(result, tuple) and len(result) == 2 and result[0] == Atom("ok")
                and isinstance(result[1], tuple) and len(result[1]) == 2):
            continue
        flags = result[1][0]
        if isinstance(flags, dict):
            return (int(flags.get(Atom("intensity"), 1)), int(flags.get(Atom("period"), 5)))
        if isinstance(flags, tuple) and len(flags) == 3:
            return (int(flags[1]), int(flags[2]))
    return None
