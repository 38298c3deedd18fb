%% A gen_server2 callback module (RabbitMQ's behaviour), for state capture tests.
-module(es_gs2).
-behaviour(gen_server2).
-export([start/1, init/1, handle_call/3, handle_cast/2, handle_info/2, prioritise_cast/3,
         terminate/2, code_change/3]).
start(N) -> gen_server2:start(?MODULE, N, []).
init(N) -> {ok, #{count => N, items => []}}.
handle_call(get, _From, S) -> {reply, S, S};
handle_call({add, X}, _From, S = #{items := I}) -> {reply, ok, S#{items := [X | I]}}.
handle_cast(bump, S = #{count := C}) -> {noreply, S#{count := C + 1}}.
handle_info(_, S) -> {noreply, S}.
prioritise_cast(bump, _Len, _S) -> 1;
prioritise_cast(_, _Len, _S) -> 0.
terminate(_, _) -> ok.
code_change(_, S, _) -> {ok, S}.
