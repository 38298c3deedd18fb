"""Explanations: what happened in a recording, in plain words.

By default a paragraph is built by rules from the findings and their evidence: no
network, the same answer every time. When an OpenAI-compatible endpoint is configured
(``ELIXIRSCOPE_LLM_URL``, ``ELIXIRSCOPE_LLM_MODEL``, optionally ``ELIXIRSCOPE_LLM_KEY``),
a language model is given the same evidence, secrets redacted, and asked for the
paragraph; the prompt can be shown (``explain --show-prompt``).

What can be explained: the recording as a whole (its worst findings), one finding (its
number as ``diagnose`` prints it), one span (its id), or one process (a pid or a name).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from elixirscope.diagnosis.finding import Finding
from elixirscope.errors import ElixirScopeError, QueryError
from elixirscope.recordings import Recording

__all__ = ["ExplainError", "Explanation", "LLMConfig", "explain", "redact_text"]

_TIMEOUT = 60.0
_SECRET_KEYS = r"password|passwd|secret|token|csrf|api_key|apikey|authorization|cookie|private_key"
# `"password" => "x"`, `password: "x"`, `{"authorization", "Bearer x"}`: the value goes.
_SECRET_VALUE = re.compile(
    rf"""(?ix)
    (["']?[\w-]*(?:{_SECRET_KEYS})[\w-]*["']?)   # a key naming a secret
    (\s*(?:=>|:|,)\s*)                          # what separates it from its value
    ("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,}}\])]+)""")

ADVICE = {
    "deadlock": "Each process in the cycle is blocked in a call waiting for the next one, "
                "so none can answer: break the cycle by making one of the calls a cast, "
                "moving the work out of the callback, or calling outside the server.",
    "crash_cascade": "The first crash is the cause; the restarts and the processes that "
                     "died with it follow from it. Fix the function that raised on the "
                     "message named, and check whether the supervisor's restart intensity "
                     "fits the failure.",
    "overload": "Messages arrive faster than the process handles them: its mailbox grows, "
                "every caller waits longer and memory goes up. Make the handler faster, "
                "spread the work over more processes, or push back on the senders.",
    "lost_update": "Two clients read the same field, then each wrote a value computed from "
                   "what it had read: the later write erased the earlier. Do the "
                   "read-modify-write inside the process that owns the state (one call).",
    "repeated_work": "The same call is made once per item where one call could fetch all "
                     "items: batch the requests.",
    "n_plus_one_queries": "One query runs per row of an earlier query: load the rows' "
                          "associations with one query (a preload, a join or WHERE ... IN).",
    "latency_outlier": "Most calls of the function are fast; the slow ones waited on the "
                       "call named inside them: look there, not at the function itself.",
    "hot_function": "The process spends its time computing in that function: optimise it "
                    "or move the work off the process that others wait on.",
    "failed_request": "The request raised in the function named, with the params shown: the "
                      "client got an error page, no process crashed, so only the request "
                      "tells.",
    "slow_query": "The database itself took the time (see the query time against the queue "
                  "time): look at the query's plan, its indexes, or what it waits on.",
}


class ExplainError(ElixirScopeError):
    """Nothing to explain by that name, or the language model could not be reached."""


@dataclass(frozen=True)
class LLMConfig:
    url: str
    model: str
    key: str | None = None

    @classmethod
    def from_env(cls) -> LLMConfig | None:
        url, model = os.environ.get("ELIXIRSCOPE_LLM_URL"), os.environ.get("ELIXIRSCOPE_LLM_MODEL")
        if not url or not model:
            return None
        return cls(url.rstrip("/"), model, os.environ.get("ELIXIRSCOPE_LLM_KEY") or None)


@dataclass(frozen=True)
class Explanation:
    subject: str
    text: str
    evidence: str  # what the rules (or the model) were given, secrets redacted
    source: str  # "rules" or the model's name
    prompt: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "text": self.text, "evidence": self.evidence,
                "source": self.source, "prompt": self.prompt}


def redact_text(text: str) -> str:
    """Values following keys that name a secret, replaced."""
    return _SECRET_VALUE.sub(lambda m: f'{m.group(1)}{m.group(2)}"[REDACTED]"', text)


def explain(rec: Recording, target: str | None = None, *,
            llm: LLMConfig | None = None) -> Explanation:
    """Explains the recording (``target`` None), finding number N (``"finding 2"`` or
    ``"2"``), a span (``"span 123"``) or a process (a pid or a name)."""
    subject, evidence, rules_text = _subject(rec, target)
    evidence = redact_text(evidence)
    if llm is None:
        return Explanation(subject, rules_text, evidence, "rules")
    prompt = (f"Explain to an on-call engineer, in one paragraph of plain words, what "
              f"happened in this recording of an Elixir/Erlang system ({subject}) and "
              f"what to look at first. Use only these facts:\n\n{evidence}")
    return Explanation(subject, _ask(llm, prompt), evidence, llm.model, prompt)


def _subject(rec: Recording, target: str | None) -> tuple[str, str, str]:
    text = (target or "").strip()
    findings = rec.findings()
    number = re.fullmatch(r"(?:finding\s*)?#?(\d+)", text, re.IGNORECASE)
    span = re.fullmatch(r"span\s*#?(\d+)", text, re.IGNORECASE)
    if not text:
        if not findings:
            summary = rec.summary(top=3)
            evidence = json.dumps(summary, default=str)[:4000]
            return ("the recording", evidence,
                    f"Nothing wrong was found in {rec.path.name}: no deadlock, crash, "
                    "overload, lost update, N+1, slow query or outlier among what was "
                    "traced. If something felt wrong, trace more of it (elixirscope plan "
                    "helps choose) and record again.")
        worst = findings[:3]
        evidence = "\n\n".join(_finding_facts(i + 1, f) for i, f in enumerate(worst))
        lead = _finding_text(worst[0], rec)
        more = (f" {len(findings) - 1} other finding{'s' if len(findings) > 2 else ''} "
                f"{'follow, the worst' if len(findings) > 2 else 'follows'}: "
                + "; ".join(f.title for f in findings[1:3]) + "."
                if len(findings) > 1 else "")
        return "the recording", evidence, lead + more
    if number and not span:
        index = int(number.group(1))
        if not 1 <= index <= len(findings):
            raise ExplainError(f"{rec.path.name} has {len(findings)} findings; there is no "
                               f"finding {index}")
        finding = findings[index - 1]
        return (f"finding {index}", _finding_facts(index, finding),
                _finding_text(finding, rec))
    if span:
        return _span_subject(rec, int(span.group(1)))
    return _process_subject(rec, text, findings)


def _finding_facts(index: int, finding: Finding) -> str:
    lines = [f"Finding {index} ({finding.kind}, {finding.severity}): {finding.title}"]
    lines += [f"- {detail}" for detail in finding.details]
    if finding.start is not None:
        lines.append(f"- from {finding.start:.3f} s"
                     + (f" to {finding.end:.3f} s" if finding.end is not None else ""))
    if finding.processes:
        lines.append(f"- processes: {', '.join(finding.processes)}")
    return "\n".join(lines)


def _finding_text(finding: Finding, rec: Recording) -> str:
    when = f" At {finding.start:.3f} s into the recording," if finding.start is not None else ""
    details = " ".join(f"{d.rstrip('.')}." for d in finding.details[:2])
    advice = ADVICE.get(finding.kind, "")
    look = (f" To see it: {finding.next_commands[0].replace('REC', str(rec.path))}."
            if finding.next_commands else "")
    return (f"{when} {finding.title.rstrip('.')}. {details} {advice}{look}").strip() \
        .replace("  ", " ")


def _span_subject(rec: Recording, span_id: int) -> tuple[str, str, str]:
    try:
        span = rec.span(span_id)
    except QueryError as exc:
        raise ExplainError(str(exc)) from None
    who = span.pid_name or span.pid
    took = ("it had not returned when the recording stopped"
            if span.duration is None else f"it took {span.duration * 1000:.3f} ms and ended "
            f"with {span.outcome}")
    inside = rec.range(span_id, max_depth=1, limit=200)
    slowest = max((child.span for child in inside.children),
                  key=lambda s: s.duration or s.running_for or 0.0, default=None)
    facts = [f"Span {span_id}: {span.call} on {who} at {span.start:.3f} s; {took}."]
    if span.result is not None:
        facts.append(f"Its result: {span.result[:500]}")
    if slowest is not None:
        share = (slowest.duration or slowest.running_for or 0.0) / (span.duration or 1e-9)
        facts.append(f"The slowest call inside it: {slowest.call} "
                     f"({(slowest.duration or slowest.running_for or 0.0) * 1000:.3f} ms, "
                     f"{min(share, 1.0):.0%} of it).")
    if span.trigger_message_id is not None:
        message = rec.message_by_id(span.trigger_message_id)
        if message is not None:
            facts.append(f"It handled a message from {message.sender_name or message.sender}.")
    evidence = "\n".join(facts)
    return f"span {span_id}", evidence, " ".join(facts)


def _process_subject(rec: Recording, target: str, findings: list[Finding]
                     ) -> tuple[str, str, str]:
    processes = [p for p in rec.processes() if target in (p.pid, *p.names)
                 or p.pid.endswith(target)]
    if not processes:
        raise ExplainError(f"nothing called {target!r} in {rec.path.name}: give a finding "
                           "number, `span N`, a pid or a registered name")
    process = processes[0]
    name = process.names[-1] if process.names else process.pid
    facts = [f"Process {name} ({process.pid}): {process.events} events recorded"
             + (f", from {process.first_seen:.3f} s" if process.first_seen is not None else "")
             + (f" to {process.last_seen:.3f} s" if process.last_seen is not None else "")
             + "."]
    if process.initial_call:
        facts.append(f"It was started as {process.initial_call}.")
    if process.exited is not None:
        facts.append(f"It exited at {process.exited:.3f} s.")
    with_it = [f for f in findings if name in f.processes or process.pid in f.processes
               or name in f.title]
    facts += [f"It is part of finding: {f.title}" for f in with_it[:3]]
    slow = rec.spans(pid=process.pid_id, slowest=1)
    if slow:
        facts.append(f"Its slowest traced call: {slow[0].call} "
                     f"({(slow[0].duration or slow[0].running_for or 0) * 1000:.3f} ms).")
    evidence = "\n".join(facts)
    advice = " ".join(ADVICE[f.kind] for f in with_it[:1] if f.kind in ADVICE)
    return f"process {name}", evidence, " ".join(facts) + (f" {advice}" if advice else "")


def _ask(llm: LLMConfig, prompt: str) -> str:
    body = json.dumps({"model": llm.model, "temperature": 0, "messages": [
        {"role": "system", "content": "You are a senior Elixir/Erlang engineer. Be concrete "
                                      "and brief; do not invent facts."},
        {"role": "user", "content": prompt}]}).encode()
    headers = {"content-type": "application/json"}
    if llm.key:
        headers["authorization"] = f"Bearer {llm.key}"
    request = urllib.request.Request(f"{llm.url}/chat/completions", data=body,
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            answer = json.loads(response.read())
        content = answer["choices"][0]["message"]["content"]
    except (OSError, urllib.error.URLError, ValueError, KeyError, IndexError,
            TypeError) as exc:
        raise ExplainError(f"the language model at {llm.url} did not answer ({exc}); "
                           "without ELIXIRSCOPE_LLM_URL the explanation is built by rules, "
                           "offline") from None
    return str(content).strip()
