%% Owns two plain processes, spawned and linked by hand rather than
%% supervised: kv_sweeper (expires keys) and kv_heartbeat (pings kv_conn).
%% It does not trap exits, so when either one crashes the janitor dies
%% with it, and kv_sup restarts the janitor, which spawns fresh workers.
-module(kv_janitor).
-behaviour(gen_server).

-export([start_link/0, workers/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

workers() ->
    gen_server:call(?MODULE, workers).

init([]) ->
    SweepMs = application:get_env(kv, sweep_ms, 500),
    HeartbeatMs = application:get_env(kv, heartbeat_ms, 200),
    Sweeper = spawn_link(fun() -> sweeper(SweepMs) end),
    Heartbeat = spawn_link(fun() -> heartbeat(HeartbeatMs, 1) end),
    true = register(kv_sweeper, Sweeper),
    true = register(kv_heartbeat, Heartbeat),
    {ok, #{sweeper => Sweeper, heartbeat => Heartbeat}}.

handle_call(workers, _From, Workers) ->
    {reply, Workers, Workers}.

handle_cast(_Msg, Workers) ->
    {noreply, Workers}.

handle_info({kv_fault, crash}, Workers) ->
    erlang:error({injected_fault, ?MODULE, Workers});
handle_info(_Msg, Workers) ->
    {noreply, Workers}.

sweeper(Ms) ->
    receive
        {kv_fault, crash} -> erlang:error({injected_fault, kv_sweeper});
        _Other -> sweeper(Ms)
    after Ms ->
        kv_store:expire(),
        sweeper(Ms)
    end.

heartbeat(Ms, N) ->
    receive
        {kv_fault, crash} -> erlang:error({injected_fault, kv_heartbeat});
        _Other -> heartbeat(Ms, N)
    after Ms ->
        case whereis(kv_conn) of
            undefined -> ok;
            Conn -> Conn ! {heartbeat, N}
        end,
        heartbeat(Ms, N + 1)
    end.
