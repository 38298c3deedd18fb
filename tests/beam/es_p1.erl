%% A p1_server callback module (ejabberd's behaviour), for state capture tests.
-module(es_p1).
-behaviour(p1_server).
-export([start/1, init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
         code_change/3]).

start(N) -> p1_server:start(?MODULE, N, []).

init(N) -> {ok, #{count => N, log => []}}.

handle_call(get, _From, S) -> {reply, S, S};
handle_call({log, X}, _From, S = #{log := L}) -> {reply, ok, S#{log := [X | L]}}.

handle_cast(bump, S = #{count := C}) -> {noreply, S#{count := C + 1}}.

handle_info(_, S) -> {noreply, S}.

terminate(_, _) -> ok.

code_change(_, S, _) -> {ok, S}.
