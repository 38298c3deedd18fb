"""ETF decoding speed on real trace events, against the ``erlang-py`` package.

One ``erl`` process runs a small gen_server under call/return/send/receive tracing with
timestamps and writes every trace message it collects with ``term_to_binary``, once as
OTP 25 writes it by default (Latin-1 ``ATOM_EXT``) and once with UTF-8 atoms (what the
distribution delivers and OTP 26+ writes). Both decoders then decode the same bytes.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from elixirscope.etf import decode

EVENTS = 3000
REPEATS = 7

_WORKLOAD = r"""
-module(es_bench_workload).
-behaviour(gen_server).
-export([run/2, init/1, handle_call/3, handle_cast/2, normalize/1]).

run(Path, Events) ->
    Collector = spawn(fun() -> collect([], Events) end),
    {ok, Server} = gen_server:start(?MODULE, [], []),
    erlang:trace(Server, true, [call, send, 'receive', timestamp, {tracer, Collector}]),
    erlang:trace_pattern({?MODULE, '_', '_'}, [{'_', [], [{return_trace}]}], [local]),
    drive(Server, 0, Events),
    Collector ! {done, self()},
    Msgs = receive {msgs, M} -> M end,
    Frame = fun(Opts) ->
        << <<(byte_size(B)):32, B/binary>> || T <- Msgs, B <- [term_to_binary(T, Opts)] >>
    end,
    ok = file:write_file(Path ++ ".default", Frame([])),
    ok = file:write_file(Path ++ ".utf8", Frame([{minor_version, 2}])).

drive(_Server, N, Events) when N * 3 >= Events ->
    timer:sleep(100);
drive(Server, N, Events) ->
    case N rem 4 of
        0 -> Name = <<"user-", (integer_to_binary(N))/binary>>,
             User = #{id => N, name => Name, roles => [admin, dev], score => N * 1.5},
             gen_server:call(Server, {put, {user, N}, User});
        1 -> gen_server:call(Server, {get, {user, N - 1}});
        2 -> gen_server:cast(Server, {touch, N, erlang:system_time()});
        3 -> gen_server:call(Server, stats)
    end,
    drive(Server, N + 1, Events).

collect(Acc, Max) when length(Acc) >= Max ->
    receive {done, From} -> From ! {msgs, lists:reverse(Acc)} end;
collect(Acc, Max) ->
    receive
        {done, From} -> From ! {msgs, lists:reverse(Acc)};
        Msg -> collect([Msg | Acc], Max)
    end.

init([]) -> {ok, #{users => #{}, calls => 0, started => erlang:monotonic_time()}}.

handle_call({put, Key, User}, _From, State = #{users := Users, calls := C}) ->
    {user, N} = Key,
    Recent = maps:remove({user, N - 8}, Users),
    {reply, ok, State#{users := maps:put(Key, normalize(User), Recent), calls := C + 1}};
handle_call({get, Key}, _From, State = #{users := Users}) ->
    {reply, maps:find(Key, Users), State};
handle_call(stats, _From, State = #{users := Users, calls := C}) ->
    {reply, {ok, #{count => maps:size(Users), calls => C}}, State}.

handle_cast({touch, N, Time}, State) ->
    {noreply, State#{last_touch => {N, Time}}}.

normalize(User = #{name := Name}) -> User#{name := string:uppercase(Name)}.
"""


def generate(events: int = EVENTS) -> dict[str, list[bytes]]:
    """Trace-event encodings made by the VM: ``{"default": [...], "utf8": [...]}``."""
    erl = shutil.which("erl")
    if erl is None:
        raise SystemExit("bench_etf_decode needs Erlang/OTP (`erl`) on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "es_bench_workload.erl"
        src.write_text(_WORKLOAD)
        out = Path(tmp) / "events"
        script = (
            f'{{ok, M, Bin}} = compile:file("{src}", [binary, report]), '
            f'{{module, M}} = code:load_binary(M, "{src}", Bin), '
            f'M:run("{out}", {events}), halt().'
        )
        subprocess.run([erl, "-noshell", "-eval", script], check=True, timeout=120,
                       capture_output=True)
        return {name: _frames((Path(f"{out}.{name}")).read_bytes())
                for name in ("default", "utf8")}


def _frames(blob: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(blob):
        (size,) = struct.unpack_from(">I", blob, pos)
        frames.append(blob[pos + 4:pos + 4 + size])
        pos += 4 + size
    return frames


def events_per_second(decoder: Callable[[bytes], Any], batch: list[bytes]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for data in batch:
            decoder(data)
        best = min(best, time.perf_counter() - start)
    return len(batch) / best


def main() -> None:
    try:
        import erlang  # type: ignore[import-untyped]  # erlang-py, the baseline
    except ImportError:
        raise SystemExit("bench_etf_decode needs the erlang-py package "
                         "(pip install elixirscope[bench])") from None
    batches = generate()
    for name, batch in batches.items():
        size = sum(map(len, batch)) / len(batch)
        ours = events_per_second(decode, batch)
        theirs = events_per_second(erlang.binary_to_term, batch)
        print(f"{name:>8} atoms: {len(batch)} events, {size:.0f} bytes each")
        print(f"          elixirscope.etf  {ours:>10,.0f} events/s")
        print(f"          erlang-py        {theirs:>10,.0f} events/s")
        print(f"          ratio            {ours / theirs:>10.2f}x")


if __name__ == "__main__":
    main()
