%% Callback processes for the capture tests: what a trace ships of calls whose
%% arguments carry a process state, and whose state is captured.
-module(es_capture).
-behaviour(gen_server).
-export([start/1, start_late/1, set/2, bump/1, summarize/2, busy/2, local_loop/1, ask/4,
         init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% A server whose state is a map of Keys entries.
start(Keys) ->
    gen_server:start(?MODULE, Keys, []).

%% The same server entered from a plain proc_lib process: its initial call names no
%% callback module, as with a gen_server2 that became another module.
start_late(Keys) ->
    Parent = self(),
    Pid = proc_lib:spawn(fun() ->
                                 {ok, State} = init(Keys),
                                 Parent ! {started, self()},
                                 gen_server:enter_loop(?MODULE, [], State)
                         end),
    receive {started, Pid} -> {ok, Pid} after 5000 -> timeout end.

set(Pid, Key) -> gen_server:call(Pid, {set, Key}).

bump(Pid) -> gen_server:cast(Pid, bump).

%% Pid asks Other for Request from inside its handle_call, waiting at most Timeout.
ask(Pid, Other, Request, Timeout) -> gen_server:call(Pid, {ask, Other, Request, Timeout}).

%% Blocks the server in a call of its own for Ms milliseconds.
busy(Pid, Ms) -> gen_server:cast(Pid, {sleep, Ms}).

%% Local calls only: a module trace must see them by default.
local_loop(0) -> done;
local_loop(N) -> _ = summarize(#{}, N), local_loop(N - 1).

init(Keys) ->
    {ok, maps:from_list([{K, {entry, K}} || K <- lists:seq(1, Keys)])}.

handle_call({ask, Other, Request, Timeout}, _From, State) ->
    {reply, catch gen_server:call(Other, Request, Timeout), State};
handle_call({set, Key}, _From, State) ->
    {reply, {ok, summarize(State, Key)}, State#{Key => {entry, set}}}.

handle_cast(bump, State) ->
    {noreply, State#{bumped => maps:get(bumped, State, 0) + 1}};
handle_cast({sleep, Ms}, State) ->
    timer:sleep(Ms),
    {noreply, State}.

handle_info(_, State) ->
    {noreply, State}.

%% A helper handed the whole state, as real code does.
summarize(State, Key) -> {Key, map_size(State)}.
