%% A gen_server2 callback module that becomes es_gs2 on a cast, as a RabbitMQ queue
%% starts as rabbit_prequeue and becomes rabbit_amqqueue_process.
-module(es_gs2_pre).
-behaviour(gen_server2).
-export([start/1, init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, code_change/3]).
start(N) -> gen_server2:start(?MODULE, N, []).
init(N) -> {ok, #{count => N, items => [prequeue]}}.
handle_call(_, _, S) -> {reply, ok, S}.
handle_cast(become, S) -> {become, es_gs2, S#{items := [became]}};
handle_cast(_, S) -> {noreply, S}.
handle_info(_, S) -> {noreply, S}.
terminate(_, _) -> ok.
code_change(_, S, _) -> {ok, S}.
