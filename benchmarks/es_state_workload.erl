%% A gen_server whose state is a map of Keys entries (each a 40-byte binary), for the
%% state-capture benchmark: every call changes one entry.
-module(es_state_workload).
-behaviour(gen_server).
-export([start/1, stop/1, run/2, init/1, handle_call/3, handle_cast/2]).

start(Keys) ->
    gen_server:start(?MODULE, Keys, []).

stop(Pid) ->
    gen_server:stop(Pid).

%% N calls from one client; microseconds taken.
run(Pid, N) ->
    {Micros, ok} = timer:tc(fun() -> loop(Pid, N) end),
    Micros.

loop(_, 0) -> ok;
loop(Pid, N) ->
    {ok, _} = gen_server:call(Pid, {set, N}),
    loop(Pid, N - 1).

init(Keys) ->
    {ok, maps:from_list([{K, binary:copy(<<K:32>>, 10)} || K <- lists:seq(1, Keys)])}.

handle_call({set, N}, _From, State) ->
    Key = N rem map_size(State) + 1,
    {reply, {ok, Key}, State#{Key := <<N:320>>}}.

handle_cast(_, State) ->
    {noreply, State}.
