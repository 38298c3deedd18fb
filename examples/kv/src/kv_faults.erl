%% Fault switches for the kv app.
-module(kv_faults).

-export([targets/0, crash/1, flood/2]).

targets() ->
    [kv_store, kv_lock, kv_conn, kv_janitor, kv_sweeper, kv_heartbeat].

%% Makes the named process crash (an error, with a stack trace) as soon as
%% it reads its mailbox. Returns {ok, Pid} with the pid that will crash.
crash(Target) ->
    case lists:member(Target, targets()) of
        false ->
            {error, {unknown_target, Target}};
        true ->
            case whereis(Target) of
                undefined -> {error, noproc};
                Pid -> Pid ! {kv_fault, crash}, {ok, Pid}
            end
    end.

%% Sends N {flood, I} messages to a registered name or a pid.
flood(Target, N) when is_integer(N), N >= 0 ->
    case resolve(Target) of
        undefined ->
            {error, noproc};
        Pid ->
            lists:foreach(fun(I) -> Pid ! {flood, I} end, lists:seq(1, N)),
            {ok, N}
    end.

resolve(Pid) when is_pid(Pid) -> Pid;
resolve(Name) when is_atom(Name) -> whereis(Name).
