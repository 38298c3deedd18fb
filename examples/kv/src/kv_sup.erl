-module(kv_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Flags = #{strategy => one_for_one, intensity => 10, period => 5},
    Children = [worker(kv_store), worker(kv_lock), worker(kv_conn), worker(kv_janitor)],
    {ok, {Flags, Children}}.

worker(Module) ->
    #{id => Module, start => {Module, start_link, []}, restart => permanent, type => worker}.
