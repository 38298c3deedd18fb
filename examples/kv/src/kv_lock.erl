%% A door lock, as a gen_statem in state_functions mode.
%%
%%   locked --unlock(right code)--> open --lock / open_ms elapsed--> locked
%%   locked --3 wrong codes--> blocked --block_ms elapsed--> locked
-module(kv_lock).
-behaviour(gen_statem).

-export([start_link/0, unlock/1, lock/0, status/0]).
-export([callback_mode/0, init/1, locked/3, open/3, blocked/3]).

-define(MAX_ATTEMPTS, 3).

start_link() ->
    gen_statem:start_link({local, ?MODULE}, ?MODULE, [], []).

%% Code: a string, a binary or an integer.
unlock(Code) ->
    gen_statem:call(?MODULE, {unlock, to_code(Code)}).

lock() ->
    gen_statem:call(?MODULE, lock).

%% {StateName, Data} without the code.
status() ->
    gen_statem:call(?MODULE, status).

callback_mode() ->
    state_functions.

init([]) ->
    Code = to_code(application:get_env(kv, lock_code, "1234")),
    {ok, locked, #{code => Code, attempts => 0, opened => 0}}.

locked({call, From}, {unlock, Code}, #{code := Code, opened := Opened} = Data) ->
    OpenMs = application:get_env(kv, open_ms, 2000),
    {next_state, open, Data#{attempts := 0, opened := Opened + 1},
     [{reply, From, ok}, {state_timeout, OpenMs, lock}]};
locked({call, From}, {unlock, _Wrong}, #{attempts := Attempts} = Data)
  when Attempts + 1 >= ?MAX_ATTEMPTS ->
    BlockMs = application:get_env(kv, block_ms, 1000),
    {next_state, blocked, Data#{attempts := 0},
     [{reply, From, {error, blocked}}, {state_timeout, BlockMs, unblock}]};
locked({call, From}, {unlock, _Wrong}, #{attempts := Attempts} = Data) ->
    {keep_state, Data#{attempts := Attempts + 1}, [{reply, From, {error, wrong_code}}]};
locked({call, From}, lock, _Data) ->
    {keep_state_and_data, [{reply, From, ok}]};
locked(EventType, Event, Data) ->
    common(EventType, Event, locked, Data).

open(state_timeout, lock, Data) ->
    {next_state, locked, Data};
open({call, From}, lock, Data) ->
    {next_state, locked, Data, [{reply, From, ok}]};
open({call, From}, {unlock, _Code}, _Data) ->
    {keep_state_and_data, [{reply, From, ok}]};
open(EventType, Event, Data) ->
    common(EventType, Event, open, Data).

blocked(state_timeout, unblock, Data) ->
    {next_state, locked, Data};
blocked({call, From}, {unlock, _Code}, _Data) ->
    {keep_state_and_data, [{reply, From, {error, blocked}}]};
blocked({call, From}, lock, _Data) ->
    {keep_state_and_data, [{reply, From, ok}]};
blocked(EventType, Event, Data) ->
    common(EventType, Event, blocked, Data).

common({call, From}, status, State, Data) ->
    {keep_state_and_data, [{reply, From, {State, maps:remove(code, Data)}}]};
common({call, From}, Request, _State, _Data) ->
    {keep_state_and_data, [{reply, From, {error, {bad_request, Request}}}]};
common(info, {kv_fault, crash}, State, _Data) ->
    erlang:error({injected_fault, ?MODULE, State});
common(_EventType, _Event, _State, _Data) ->
    keep_state_and_data.

to_code(Code) when is_binary(Code) -> binary_to_list(Code);
to_code(Code) when is_integer(Code) -> integer_to_list(Code);
to_code(Code) when is_list(Code) -> Code.
