%% A connection to an imaginary peer, as a gen_statem in
%% handle_event_function mode with state enter calls.
%%
%%   disconnected --connect--> connecting --50 ms--> connected
%%   connected --fail--> backoff --backoff_ms (doubling, max 2 s)--> connecting
%%   any --disconnect--> disconnected
%% It connects on its own when it starts.
-module(kv_conn).
-behaviour(gen_statem).

-export([start_link/0, connect/0, disconnect/0, fail/0, status/0]).
-export([callback_mode/0, init/1, handle_event/4]).

-define(HANDSHAKE_MS, 50).
-define(MIN_BACKOFF_MS, 100).
-define(MAX_BACKOFF_MS, 2000).

start_link() ->
    gen_statem:start_link({local, ?MODULE}, ?MODULE, [], []).

connect() -> gen_statem:call(?MODULE, connect).
disconnect() -> gen_statem:call(?MODULE, disconnect).
%% Simulates losing the connection.
fail() -> gen_statem:call(?MODULE, fail).
status() -> gen_statem:call(?MODULE, status).

callback_mode() ->
    [handle_event_function, state_enter].

init([]) ->
    Data = #{attempts => 0, failures => 0, heartbeats => 0,
             backoff_ms => ?MIN_BACKOFF_MS, connected_at => undefined},
    {ok, disconnected, Data, [{next_event, internal, connect}]}.

handle_event(enter, _Old, connecting, #{attempts := Attempts} = Data) ->
    {keep_state, Data#{attempts := Attempts + 1}, [{state_timeout, ?HANDSHAKE_MS, handshake_done}]};
handle_event(enter, _Old, connected, Data) ->
    {keep_state, Data#{connected_at := erlang:system_time(millisecond),
                       backoff_ms := ?MIN_BACKOFF_MS}};
handle_event(enter, _Old, backoff, #{backoff_ms := Ms} = Data) ->
    {keep_state, Data#{backoff_ms := min(2 * Ms, ?MAX_BACKOFF_MS)}, [{state_timeout, Ms, retry}]};
handle_event(enter, _Old, disconnected, Data) ->
    {keep_state, Data#{connected_at := undefined}};

handle_event(internal, connect, disconnected, Data) ->
    {next_state, connecting, Data};
handle_event(state_timeout, handshake_done, connecting, Data) ->
    {next_state, connected, Data};
handle_event(state_timeout, retry, backoff, Data) ->
    {next_state, connecting, Data};

handle_event({call, From}, connect, disconnected, Data) ->
    {next_state, connecting, Data, [{reply, From, ok}]};
handle_event({call, From}, connect, _State, _Data) ->
    {keep_state_and_data, [{reply, From, ok}]};
handle_event({call, From}, disconnect, _State, Data) ->
    {next_state, disconnected, Data, [{reply, From, ok}]};
handle_event({call, From}, fail, connected, #{failures := Failures} = Data) ->
    {next_state, backoff, Data#{failures := Failures + 1, connected_at := undefined},
     [{reply, From, ok}]};
handle_event({call, From}, fail, State, _Data) ->
    {keep_state_and_data, [{reply, From, {error, {not_connected, State}}}]};
handle_event({call, From}, status, State, Data) ->
    {keep_state_and_data, [{reply, From, {State, Data}}]};
handle_event({call, From}, Request, _State, _Data) ->
    {keep_state_and_data, [{reply, From, {error, {bad_request, Request}}}]};

handle_event(info, {heartbeat, _N}, connected, #{heartbeats := Beats} = Data) ->
    {keep_state, Data#{heartbeats := Beats + 1}};
handle_event(info, {kv_fault, crash}, State, _Data) ->
    erlang:error({injected_fault, ?MODULE, State});
handle_event(_EventType, _Event, _State, _Data) ->
    keep_state_and_data.
