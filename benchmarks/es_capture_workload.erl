%% Callback processes whose arguments carry a large state, for the capture-cost
%% benchmark's throughput shapes (its cost per call uses es_state_workload):
%%   map server   a gen_server whose state is a map of Keys entries; a cast changes one.
%%   queue server a gen_server holding a queue of Held messages, taking one in and
%%                handing one out per cast, as a broker's queue process does; its
%%                helper functions are handed the whole state, as real code does.
-module(es_capture_workload).
-behaviour(gen_server).
-export([start_map/1, start_queue/1, stop/1, casts/3,
         init/1, handle_call/3, handle_cast/2, handle_info/2]).

start_map(Keys) ->
    gen_server:start(?MODULE, {map, Keys}, []).

start_queue(Held) ->
    gen_server:start(?MODULE, {queue, Held}, []).

stop(Pid) ->
    gen_server:stop(Pid).

%% N casts offered at Rate per second (in bursts every millisecond); microseconds
%% until the server has handled the last one.
casts(Pid, N, Rate) ->
    PerMs = max(1, Rate div 1000),
    Start = erlang:monotonic_time(microsecond),
    offer(Pid, N, PerMs, Start, 0),
    ok = gen_server:call(Pid, sync, infinity),
    erlang:monotonic_time(microsecond) - Start.

offer(_, 0, _, _, _) -> ok;
offer(Pid, N, PerMs, Start, Sent) ->
    Burst = min(N, PerMs),
    [gen_server:cast(Pid, {publish, Sent + I}) || I <- lists:seq(1, Burst)],
    Due = Start + (Sent + Burst) * 1000 div PerMs,
    Wait = Due - erlang:monotonic_time(microsecond),
    Wait > 1000 andalso timer:sleep(Wait div 1000),
    offer(Pid, N - Burst, PerMs, Start, Sent + Burst).

init({map, Keys}) ->
    {ok, {map, maps:from_list([{K, {entry, K, binary:copy(<<K:32>>, 10)}}
                               || K <- lists:seq(1, Keys)])}};
init({queue, Held}) ->
    Q = lists:foldl(fun(I, Acc) -> queue:in({message, I, <<I:64>>}, Acc) end,
                    queue:new(), lists:seq(1, Held)),
    {ok, {queue, Q, 0}}.

handle_call(sync, _From, State) ->
    {reply, ok, State}.

handle_cast({publish, I}, State) ->
    {noreply, deliver(publish(I, State))}.

handle_info(_, State) ->
    {noreply, State}.

publish(I, {map, Map}) ->
    Key = I rem map_size(Map) + 1,
    {map, Map#{Key := {entry, I, <<I:320>>}}};
publish(I, {queue, Q, Delivered}) ->
    {queue, queue:in({message, I, <<I:64>>}, Q), Delivered}.

deliver({queue, Q, Delivered}) ->
    {{value, _}, Q1} = queue:out(Q),
    {queue, Q1, Delivered + 1};
deliver(State) ->
    State.
