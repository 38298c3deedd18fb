%% An xmpp_stream_in callback module (ejabberd's c2s behaviour), for state capture
%% tests: a stream process that is never given a socket stays accepting, and its
%% casts reach the callback module through xmpp_stream_in's own handle_cast.
-module(es_xmpp).
-behaviour(xmpp_stream_in).
-export([start/1, init/1, handle_cast/2, handle_call/3, handle_info/2, terminate/2,
         code_change/3]).

start(_) -> xmpp_stream_in:start(?MODULE, [{gen_tcp, no_socket}, []], []).

init([State, _Opts]) -> {ok, State}.

handle_cast({log, X}, State) -> State#{log => [X | maps:get(log, State, [])]};
handle_cast(_, State) -> State.

handle_call(_, _, State) -> State.

handle_info(_, State) -> State.

terminate(_, _) -> ok.

code_change(_, State, _) -> {ok, State}.
