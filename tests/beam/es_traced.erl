%% Deterministic code for the tracing tests, loaded into test nodes.
-module(es_traced).
-export([add/2, fail/1, countdown/1, big/1, echo_server/0, spawner/2, child/1,
         call_many/2, registered_worker/1, seq_server/0]).

add(A, B) -> helper(A) + B.

helper(X) -> X.

fail(X) -> erlang:error({bad, X}).

countdown(0) -> done;
countdown(N) -> countdown(N - 1).

big(N) -> lists:seq(1, N).

echo_server() ->
    receive
        {From, Msg} -> From ! {echo, Msg}, echo_server();
        stop -> ok
    end.

%% Spawns N children that each report back, then waits for them all.
spawner(Parent, N) ->
    Me = self(),
    [spawn(?MODULE, child, [Me]) || _ <- lists:seq(1, N)],
    [receive {done, _} -> ok end || _ <- lists:seq(1, N)],
    Parent ! {spawner_done, N}.

child(Parent) ->
    _ = add(1, 1),
    Parent ! {done, self()}.

call_many(0, _) -> ok;
call_many(N, X) -> _ = add(X, N), call_many(N - 1, X).

registered_worker(Name) ->
    register(Name, self()),
    worker_loop(Name).

worker_loop(Name) ->
    receive
        stop -> unregister(Name);
        Message -> _ = helper(Message), worker_loop(Name)
    end.

seq_server() ->
    receive
        {From, N} -> From ! {seq, lists:seq(1, N)}, seq_server();
        stop -> ok
    end.
