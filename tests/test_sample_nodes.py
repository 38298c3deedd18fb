"""The sample apps and the launcher that runs them as real BEAM nodes.

Nodes are checked from the outside only: ``epmd -names`` for registration,
``/proc`` for processes, and a throwaway hidden Erlang node (``probe``) that
talks to the sample node with ``rpc:call``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elixirscope.sample_nodes import (
    BeamNode,
    NodeStartError,
    SampleCompileError,
    _private_home,
    compile_sample,
    examples_dir,
    start_bare,
    start_sample,
)

pytestmark = pytest.mark.node


# --------------------------------------------------------------------------- helpers


def epmd_names() -> set[str]:
    result = subprocess.run(
        ["epmd", "-names"], capture_output=True, text=True, timeout=10, check=False
    )
    return set(re.findall(r"^name (\S+) at port \d+", result.stdout, re.MULTILINE))


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def probe(node: BeamNode, body: str, timeout: float = 30) -> str:
    """Evaluate Erlang expressions on a throwaway hidden node that has the target's cookie.

    In ``body``, ``Node`` is the target's name and ``R(M, F, A)`` an
    ``rpc:call`` to it. Returns the value of ``body`` as ``~0p`` prints it.
    """
    longnames = "." in node.host
    name = f"probe_{secrets.token_hex(4)}" + ("@127.0.0.1" if longnames else "")
    code = (
        f"Node = '{node.name}', R = fun(M, F, A) -> rpc:call(Node, M, F, A, 10000) end, "
        f"Result = begin {body} end, "
        'io:format("PROBE-RESULT ~0p~n", [Result]), halt().'
    )
    with _private_home(node.cookie) as home:
        env = {**os.environ, "HOME": str(home), "ERL_CRASH_DUMP_SECONDS": "0"}
        command = ["erl", "-name" if longnames else "-sname", name, "-hidden", "-noshell"]
        result = subprocess.run(
            [*command, "-eval", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    for line in result.stdout.splitlines():
        if line.startswith("PROBE-RESULT "):
            return line.removeprefix("PROBE-RESULT ")
    raise AssertionError(
        f"probe failed with status {result.returncode}:\n{result.stdout}{result.stderr}\n"
        f"--- node output ---\n{node.output[-4000:]}"
    )


def proc_state(pid: int) -> str | None:
    """The /proc state letter of a process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def running(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z")


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.fixture(scope="module")
def bank() -> Iterator[BeamNode]:
    with start_sample("bank") as node:
        yield node


@pytest.fixture(scope="module")
def kv() -> Iterator[BeamNode]:
    with start_sample("kv") as node:
        yield node


# --------------------------------------------------------------------------- compiling


def test_examples_dir_holds_both_apps() -> None:
    root = examples_dir()
    assert (root / "bank" / "mix.exs").is_file()
    assert (root / "kv" / "src" / "kv.app.src").is_file()


@pytest.mark.parametrize(
    ("app", "mod"),
    [("kv", "{mod, {kv_app, []}}"), ("bank", "{mod,{'Elixir.Bank.Application',[]}}")],
)
def test_compile_writes_app_file_and_is_cached(tmp_path: Path, app: str, mod: str) -> None:
    ebin = compile_sample(app, cache_dir=tmp_path)  # type: ignore[arg-type]
    beams = sorted(path.stem for path in ebin.glob("*.beam"))
    app_file = (ebin / f"{app}.app").read_text()
    listed = re.search(r"\{\s*modules\s*,\s*\[([^\]]*)\]", app_file)
    assert listed is not None
    assert sorted(atom.strip(" '") for atom in listed.group(1).split(",")) == beams
    assert mod in app_file

    stamp = {path: path.stat().st_mtime_ns for path in ebin.iterdir()}
    assert compile_sample(app, cache_dir=tmp_path) == ebin  # type: ignore[arg-type]
    assert {path: path.stat().st_mtime_ns for path in ebin.iterdir()} == stamp
    assert [path.name for path in tmp_path.iterdir() if path.is_dir()] == [ebin.parent.name]


def test_concurrent_compiles_share_one_build(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; "
        "from elixirscope.sample_nodes import compile_sample; "
        "print(compile_sample('kv', cache_dir=Path(sys.argv[1])))"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], results
    assert len({out.strip() for out, _err in results}) == 1
    assert [path.name for path in tmp_path.iterdir() if path.is_dir()] == [
        Path(results[0][0].strip()).parent.name
    ]


def test_compile_error_carries_compiler_output(tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(examples_dir() / "kv", examples / "kv")
    broken = examples / "kv" / "src" / "kv_store.erl"
    broken.write_text(broken.read_text() + "\nbroken( ->\n")
    cache = tmp_path / "cache"

    with pytest.raises(SampleCompileError) as caught:
        compile_sample("kv", examples=examples, cache_dir=cache)

    assert "Compiling the kv sample failed" in str(caught.value)
    assert "kv_store.erl" in caught.value.output
    assert "syntax error" in caught.value.output
    assert [path for path in cache.iterdir() if path.is_dir()] == []


def test_bad_arguments_are_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="unknown sample app"):
        start_sample("shop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix"):
        start_bare(name_prefix="no spaces")
    with pytest.raises(ValueError, match="cookie"):
        start_bare(cookie="has space")
    with pytest.raises(ValueError, match="kind"):
        start_bare("iex")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bank


def test_bank_node_is_registered_and_keeps_its_cookie_private(bank: BeamNode) -> None:
    assert bank.alive
    assert re.fullmatch(r"bank_[0-9a-f]{8}@[^@]+", bank.name)
    assert bank.short_name in epmd_names()
    assert bank.cookie not in repr(bank)
    assert bank.cookie.encode() not in Path(f"/proc/{bank.os_pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{bank.os_pid}/environ").read_bytes().split(b"\0")
    home = next(entry for entry in environ if entry.startswith(b"HOME=")).removeprefix(b"HOME=")
    assert not os.path.exists(home), "the private cookie home should be gone once the node is up"
    assert probe(bank, "R(erlang, node, [])").strip("'") == bank.name


def test_bank_transfer_moves_money(bank: BeamNode) -> None:
    result = probe(
        bank,
        """
        {ok, _} = R('Elixir.Bank', open_account, [101, <<"payer">>, 500]),
        {ok, _} = R('Elixir.Bank', open_account, [102, <<"payee">>, 0]),
        Done = R('Elixir.Bank', transfer, [101, 102, 120]),
        Refused = R('Elixir.Bank', transfer, [102, 101, 1000]),
        {Done, R('Elixir.Bank', balance, [101]), R('Elixir.Bank', balance, [102]), Refused,
         R('Elixir.Bank.Auditor', check_now, [])}
        """,
    )
    assert re.fullmatch(
        r"\{\{ok,\d+\},380,120,\{error,insufficient_funds\},\{ok,\d+\}\}", result
    ), result


def test_bank_crash_switch_crashes_and_supervisor_restarts(bank: BeamNode) -> None:
    result = probe(
        bank,
        """
        {ok, Pid1} = R('Elixir.Bank', open_account, [201, <<"fragile">>, 300]),
        {ok, _} = R('Elixir.Bank', open_account, [202, <<"flaky">>, 50]),
        ok = R('Elixir.Bank.Faults', crash_next, [201]),
        Crashed = R('Elixir.Bank', transfer, [201, 202, 5]),
        timer:sleep(100),
        Pid2 = R('Elixir.Bank.Account', whereis, [201]),
        B1 = R('Elixir.Bank', balance, [201]),
        ok = R('Elixir.Bank.Faults', crash_next, [202, exit]),
        Refunded = R('Elixir.Bank', transfer, [201, 202, 7]),
        timer:sleep(100),
        {Crashed, is_pid(Pid2) andalso Pid2 =/= Pid1, R(erlang, is_process_alive, [Pid1]), B1,
         Refunded, R('Elixir.Bank', balance, [201]), R('Elixir.Bank', balance, [202]),
         R('Elixir.Bank.Faults', crash_next, [999])}
        """,
    )
    assert result == (
        "{{error,{crashed,'Elixir.ArithmeticError'}},true,false,300,"
        "{error,{compensated,{exit,{injected_fault,202}},{ok,300}}},300,50,"
        "{error,no_such_account}}"
    )
    assert wait_for(lambda: "** (ArithmeticError)" in bank.output), bank.output[-3000:]


def test_bank_workload_is_repeatable_for_a_seed(bank: BeamNode) -> None:
    result = probe(
        bank,
        """
        Run = fun(Seed) ->
            Before = length(R('Elixir.Bank.Ledger', entries, [])),
            ok = R('Elixir.Bank.Workload', start, [[{rate, 100}, {seed, Seed}, {max_amount, 5}]]),
            timer:sleep(400),
            ok = R('Elixir.Bank.Workload', pause, []),
            Paused = maps:get(status, R('Elixir.Bank.Workload', stats, [])),
            ok = R('Elixir.Bank.Workload', stop, []),
            timer:sleep(100),
            Stats = R('Elixir.Bank.Workload', stats, []),
            New = lists:nthtail(Before, R('Elixir.Bank.Ledger', entries, [])),
            Moves = [{maps:get(from, E), maps:get(to, E), maps:get(amount, E)}
                     || E <- New, maps:get(kind, E) =:= transfer],
            {Paused, maps:get(status, Stats), maps:get(ok, Stats), lists:sublist(Moves, 10)}
        end,
        {P1, S1, Ok1, M1} = Run(7),
        {_, _, _, M2} = Run(7),
        {_, _, _, M3} = Run(8),
        {P1, S1, Ok1 >= 10, length(M1), M1 =:= M2, M1 =/= M3}
        """,
    )
    assert result == "{paused,idle,true,10,true,true}"


def test_bank_slow_and_flood_switches(bank: BeamNode) -> None:
    result = probe(
        bank,
        """
        ok = R('Elixir.Bank.Faults', slow, [300]),
        {Slow, {ok, _}} = R(timer, tc, ['Elixir.Bank', transfer, [1, 2, 1]]),
        ok = R('Elixir.Bank.Faults', slow, [0]),
        {Fast, {ok, _}} = R(timer, tc, ['Elixir.Bank', transfer, [2, 1, 1]]),
        Sleeper = R(erlang, spawn, [timer, sleep, [5000]]),
        Flood = R('Elixir.Bank.Faults', flood, [Sleeper, 500]),
        {Slow >= 300000, Fast < 300000, Flood,
         R(erlang, process_info, [Sleeper, message_queue_len]),
         R('Elixir.Bank.Faults', flood, [no_such_name, 1])}
        """,
    )
    assert result == "{true,true,{ok,500},{message_queue_len,500},{error,noproc}}"


def test_bank_with_workload_on_long_names() -> None:
    with start_sample("bank", workload=True, longnames=True, name_prefix="busybank") as node:
        assert node.name.startswith("busybank_") and node.name.endswith("@127.0.0.1")
        assert node.short_name in epmd_names()
        result = probe(
            node,
            """
            timer:sleep(500),
            Stats = R('Elixir.Bank.Workload', stats, []),
            {maps:get(status, Stats), maps:get(sent, Stats) > 0, maps:get(seed, Stats)}
            """,
        )
        assert result == "{running,true,1}"
    assert node.returncode == 0
    assert "Application bank exited: :stopped" in node.output, "stop() should stop the app first"


# --------------------------------------------------------------------------- kv


def test_kv_state_machines_transition(kv: BeamNode) -> None:
    assert kv.short_name in epmd_names()
    result = probe(
        kv,
        """
        ok = R(kv_lock, lock, []),
        L0 = element(1, R(kv_lock, status, [])),
        ok = R(kv_lock, unlock, [<<"1234">>]),
        L1 = element(1, R(kv_lock, status, [])),
        ok = R(kv_lock, lock, []),
        Wrong = [R(kv_lock, unlock, ["0000"]) || _ <- [1, 2, 3]],
        L2 = element(1, R(kv_lock, status, [])),
        timer:sleep(100),
        C0 = element(1, R(kv_conn, status, [])),
        ok = R(kv_conn, fail, []),
        C1 = element(1, R(kv_conn, status, [])),
        timer:sleep(400),
        {C2, Conn} = R(kv_conn, status, []),
        {L0, L1, Wrong, L2, C0, C1, C2, maps:get(failures, Conn) >= 1}
        """,
    )
    assert result == (
        "{locked,open,[{error,wrong_code},{error,wrong_code},{error,blocked}],blocked,"
        "connected,backoff,connected,true}"
    )


def test_kv_store_expiry_and_crash_switches(kv: BeamNode) -> None:
    result = probe(
        kv,
        """
        ok = R(kv_store, put, [<<"short">>, 1, 100]),
        ok = R(kv_store, put, [<<"long">>, 2]),
        timer:sleep(700),
        Expired = {R(kv_store, get, [<<"short">>]), R(kv_store, get, [<<"long">>])},
        #{sweeper := S1, heartbeat := H1} = R(kv_janitor, workers, []),
        J1 = R(erlang, whereis, [kv_janitor]),
        {ok, S1} = R(kv_faults, crash, [kv_sweeper]),
        timer:sleep(200),
        #{sweeper := S2, heartbeat := H2} = R(kv_janitor, workers, []),
        J2 = R(erlang, whereis, [kv_janitor]),
        St1 = R(erlang, whereis, [kv_store]),
        {ok, St1} = R(kv_faults, crash, [kv_store]),
        timer:sleep(200),
        St2 = R(erlang, whereis, [kv_store]),
        {Expired, S1 =/= S2, H1 =/= H2, R(erlang, is_process_alive, [H1]), is_pid(J2), J1 =/= J2,
         is_pid(St2), St1 =/= St2, R(kv_store, get, [<<"long">>]),
         R(kv_faults, crash, [not_a_target])}
        """,
    )
    assert result == (
        "{{not_found,{ok,2}},true,true,false,true,true,true,true,not_found,"
        "{error,{unknown_target,not_a_target}}}"
    )
    assert wait_for(lambda: "injected_fault,kv_sweeper" in kv.output), kv.output[-3000:]


def test_kv_with_workload() -> None:
    with start_sample("kv", workload=True) as node:
        result = probe(
            node,
            """
            timer:sleep(300),
            {ok, Counts} = R(kv_load, stats, []),
            ok = R(kv_load, stop, []),
            timer:sleep(100),
            {maps:get(get, Counts, 0) > 0, maps:get(put, Counts, 0) > 0, R(kv_load, stats, [])}
            """,
        )
        assert result == "{true,true,{error,not_running}}"


# --------------------------------------------------------------------------- bare nodes


@pytest.mark.parametrize(
    ("kind", "longnames", "body", "expected"),
    [
        ("erl", True, "R(erlang, system_info, [otp_release])", r'"\d+"'),
        ("elixir", False, "R('Elixir.System', version, [])", r'<<"1\.\d+\.\d+">>'),
    ],
)
def test_bare_node(kind: str, longnames: bool, body: str, expected: str) -> None:
    node = start_bare(kind, longnames=longnames)  # type: ignore[arg-type]
    try:
        assert node.name.startswith(f"bare_{kind}_")
        assert node.short_name in epmd_names()
        assert re.fullmatch(expected, probe(node, body))
    finally:
        node.stop()
    assert not node.alive
    assert node.short_name not in epmd_names()


def test_stop_is_graceful_and_leaves_no_process_behind() -> None:
    node = start_bare("erl")
    family = {node.os_pid} | descendants(node.os_pid)
    assert len(family) > 1, "a running VM has at least erl_child_setup below it"
    node.stop()
    assert node.returncode == 0
    assert not node.alive
    assert wait_for(lambda: not any(running(pid) for pid in family))
    node.stop()
    node.kill()
    assert node.returncode == 0


def test_kill_is_immediate() -> None:
    node = start_bare("erl")
    node.kill()
    assert node.returncode == -signal.SIGKILL
    assert wait_for(lambda: node.short_name not in epmd_names())


@pytest.mark.parametrize("kind", ["erl", "elixir"])
def test_node_dies_with_the_python_process_that_started_it(kind: str) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from elixirscope.sample_nodes import start_bare
        node = start_bare(sys.argv[1])
        print(node.os_pid, node.short_name, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None and parent.stderr is not None
    line = parent.stdout.readline()
    pid = 0
    try:
        if not line:
            pytest.fail(f"the parent process failed to start a node:\n{parent.stderr.read()}")
        pid_text, short_name = line.split()
        pid = int(pid_text)
        assert running(pid)
        assert short_name in epmd_names()
        parent.kill()
        parent.wait()
        killed_at = time.monotonic()
        assert wait_for(lambda: not running(pid), timeout=5), "the node outlived its parent"
        assert time.monotonic() - killed_at < 5
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if pid and running(pid):
            os.kill(pid, signal.SIGKILL)


def test_failed_start_reports_the_node_output() -> None:
    with pytest.raises(NodeStartError) as caught:
        start_bare(extra_args=["-eval", "erlang:error(sample_boot_failure)"])
    assert "exited with status 1" in str(caught.value)
    assert "sample_boot_failure" in caught.value.output


def test_start_timeout_kills_the_node() -> None:
    prefix = f"stuck_{secrets.token_hex(3)}"
    errors: list[BaseException] = []

    def start() -> None:
        try:
            start_bare(name_prefix=prefix, extra_args=["-eval", "timer:sleep(infinity)"], timeout=3)
        except BaseException as exc:
            errors.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    registered = wait_for(lambda: any(name.startswith(prefix) for name in epmd_names()))
    starter.join(30)
    assert registered, "the stuck node should have come up far enough to register"
    assert len(errors) == 1 and isinstance(errors[0], NodeStartError), errors
    assert "timed out after 3 s" in str(errors[0])
    assert wait_for(lambda: not any(name.startswith(prefix) for name in epmd_names()))
