%% A workload for the kv app: a plain process (not linked to anything) that
%% does random puts, gets and deletes at a steady rate, and now and then
%% tries the lock with a right or a wrong code. Same seed, same operations.
-module(kv_load).

-export([start/0, start/1, stop/0, stats/0]).

-define(KEYS, 50).

%% Options: rate (operations/s, default 50), seed (default 1).
start() ->
    start(#{}).

start(Opts) when is_list(Opts) ->
    start(maps:from_list(Opts));
start(Opts) when is_map(Opts) ->
    _ = stop(),
    Rate = maps:get(rate, Opts, 50),
    Seed = maps:get(seed, Opts, 1),
    TickMs = max(1, 1000 div Rate),
    Pid = spawn(fun() -> loop(TickMs, rand:seed_s(exsss, {Seed, Seed, Seed}), #{}) end),
    true = register(?MODULE, Pid),
    ok.

stop() ->
    case whereis(?MODULE) of
        undefined -> ok;
        Pid -> Pid ! stop, ok
    end.

%% #{Operation => Count}
stats() ->
    case whereis(?MODULE) of
        undefined ->
            {error, not_running};
        Pid ->
            Ref = monitor(process, Pid),
            Pid ! {stats, self(), Ref},
            receive
                {Ref, Counts} -> demonitor(Ref, [flush]), {ok, Counts};
                {'DOWN', Ref, process, Pid, _} -> {error, not_running}
            after 5000 -> demonitor(Ref, [flush]), {error, timeout}
            end
    end.

loop(TickMs, Rand0, Counts) ->
    receive
        stop ->
            ok;
        {stats, From, Ref} ->
            From ! {Ref, Counts},
            loop(TickMs, Rand0, Counts)
    after TickMs ->
        {Dice, Rand1} = rand:uniform_s(100, Rand0),
        {K, Rand} = rand:uniform_s(?KEYS, Rand1),
        Key = list_to_binary(["key", integer_to_list(K)]),
        Op = try operation(Dice, Key) catch exit:_ -> failed end,
        loop(TickMs, Rand, maps:update_with(Op, fun(C) -> C + 1 end, 1, Counts))
    end.

operation(Dice, Key) when Dice =< 40 -> _ = kv_store:get(Key), get;
operation(Dice, Key) when Dice =< 70 -> ok = kv_store:put(Key, Dice), put;
operation(Dice, Key) when Dice =< 80 -> ok = kv_store:put(Key, Dice, 300), put_ttl;
operation(Dice, Key) when Dice =< 95 -> _ = kv_store:delete(Key), delete;
operation(Dice, _Key) when Dice =< 98 -> _ = kv_lock:unlock(application:get_env(kv, lock_code, "1234")), unlock;
operation(_Dice, _Key) -> _ = kv_lock:unlock("wrong"), wrong_code.
