%% Key-value store: writes go through the server, reads go straight to ETS.
%% The table belongs to the server, so a crash of the server loses the data.
-module(kv_store).
-behaviour(gen_server).

-export([start_link/0, put/2, put/3, get/1, delete/1, keys/0, size/0, expire/0, stats/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(TABLE, kv_table).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

put(Key, Value) ->
    gen_server:call(?MODULE, {put, Key, Value, infinity}).

put(Key, Value, TtlMs) when is_integer(TtlMs), TtlMs > 0 ->
    gen_server:call(?MODULE, {put, Key, Value, now_ms() + TtlMs}).

get(Key) ->
    Now = now_ms(),
    case ets:lookup(?TABLE, Key) of
        [{Key, Value, Expires}] when Expires =:= infinity; Expires > Now -> {ok, Value};
        _ -> not_found
    end.

delete(Key) ->
    gen_server:call(?MODULE, {delete, Key}).

keys() ->
    lists:sort(ets:select(?TABLE, [{{'$1', '_', '_'}, [], ['$1']}])).

size() ->
    ets:info(?TABLE, size).

expire() ->
    gen_server:cast(?MODULE, {expire, now_ms()}).

stats() ->
    gen_server:call(?MODULE, stats).

init([]) ->
    Table = ets:new(?TABLE, [named_table, protected, set, {read_concurrency, true}]),
    {ok, #{table => Table, puts => 0, deletes => 0, expired => 0}}.

handle_call({put, Key, Value, Expires}, _From, #{puts := Puts} = State) ->
    true = ets:insert(?TABLE, {Key, Value, Expires}),
    {reply, ok, State#{puts := Puts + 1}};
handle_call({delete, Key}, _From, #{deletes := Deletes} = State) ->
    Reply = case ets:take(?TABLE, Key) of
                [] -> not_found;
                [_] -> ok
            end,
    {reply, Reply, State#{deletes := Deletes + 1}};
handle_call(stats, _From, State) ->
    {reply, State#{size => ets:info(?TABLE, size)}, State}.

handle_cast({expire, Now}, #{expired := Expired} = State) ->
    Gone = ets:select_delete(?TABLE, [{{'_', '_', '$1'},
                                       [{'andalso', {is_integer, '$1'}, {'=<', '$1', Now}}],
                                       [true]}]),
    {noreply, State#{expired := Expired + Gone}}.

handle_info({kv_fault, crash}, State) ->
    erlang:error({injected_fault, ?MODULE, State});
handle_info(_Msg, State) ->
    {noreply, State}.

now_ms() ->
    erlang:monotonic_time(millisecond).
