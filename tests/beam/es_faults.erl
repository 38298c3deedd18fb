%% Small misbehaving systems, one bug each, for the detectors' tests. Each scenario
%% starts its own processes; a test runs one scenario on a node of its own.
-module(es_faults).

-export([start/1, deadlock/0, deadlock_forever/0, task_deadlock/0, cascade/0, cascade_sup/0, overload/1, page/1, fetch/1, outliers/1, hot/1,
         crunch/1, lost_update/0, client/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% --- deadlock: es_dl_a calls es_dl_b, which calls es_dl_a back ----------------------

deadlock() ->
    start(es_dl_a),
    start(es_dl_b),
    spawn(fun() -> gen_server:call(es_dl_a, transfer, 5000) end),
    ok.

%% The same cycle with no timeouts: both stay blocked until someone kills one.
deadlock_forever() ->
    start(es_dl_a),
    start(es_dl_b),
    spawn(fun() -> gen_server:call(es_dl_a, transfer_forever, infinity) end),
    ok.

%% On an Elixir node: es_dl_a awaits a Task that calls es_dl_a back.
task_deadlock() ->
    start(es_dl_a),
    spawn(fun() -> gen_server:call(es_dl_a, task_transfer, 5000) end),
    ok.

%% --- crash cascade: a worker that crashes on a bad charge, with a linked helper,
%% under a supervisor that gives up after 3 restarts in 10 s --------------------------

cascade() ->
    cascade_sup(),
    Client = spawn(fun() -> register(es_client, self()), charge_loop(5) end),
    {ok, Client}.

cascade_sup() ->
    case whereis(es_sup) of
        undefined ->
            Sup = start_sup(),
            %% A process that monitors the worker and cannot do without it.
            Watcher = spawn(fun() ->
                                    register(es_watcher, self()),
                                    Ref = monitor(process, es_worker),
                                    receive {'DOWN', Ref, process, _, Why} ->
                                            exit({worker_gone, Why})
                                    end
                            end),
            wait_registered(es_watcher, Watcher),
            Sup;
        Sup -> Sup
    end.

wait_registered(Name, Pid) ->
    case whereis(Name) of
        Pid -> ok;
        _ -> timer:sleep(5), wait_registered(Name, Pid)
    end.

start_sup() ->
    Parent = self(),
    spawn(fun() ->
                  process_flag(trap_exit, true),
                  {ok, Sup} = supervisor:start_link({local, es_sup}, ?MODULE, sup),
                  Parent ! {started, Sup},
                  receive stop -> ok end
          end),
    receive {started, Sup} -> Sup end.

charge_loop(0) -> ok;
charge_loop(N) ->
    timer:sleep(100),
    gen_server:cast(es_worker, {charge, 0}),
    charge_loop(N - 1).

%% --- overload: a producer casts jobs faster than es_sink handles them ---------------

overload(N) ->
    start(es_sink),
    spawn(fun() ->
                  register(es_producer, self()),
                  [gen_server:cast(es_sink, {job, I}) || I <- lists:seq(1, N)],
                  receive stop -> ok end
          end),
    ok.

%% --- N+1: a page fetches each item with its own call to es_store -------------------

page(N) ->
    start(es_store),
    [fetch(Id) || Id <- lists:seq(1, N)].

fetch(Id) ->
    gen_server:call(es_store, {fetch, Id}).

%% --- latency outliers: one request waits on a slow backend --------------------------

outliers(N) ->
    start(es_api),
    start(es_backend),
    [request(I) || I <- lists:seq(1, N)],
    ok.

%% Each request from a process of its own, as a web server would make them.
request(I) ->
    Self = self(),
    Pid = spawn(fun() -> Self ! {self(), gen_server:call(es_api, {get, I})} end),
    receive {Pid, Answer} -> Answer end.

%% --- hot function: a process that spends its time in crunch/1 ----------------------

hot(Ms) ->
    start(es_hot),
    gen_server:cast(es_hot, {crunch_for, Ms}).

crunch_until(Until, State) ->
    _ = crunch(100000),
    case erlang:monotonic_time(millisecond) < Until of
        true -> crunch_until(Until, State);
        false -> State
    end.

crunch(N) ->
    lists:foldl(fun(X, Acc) -> (Acc * 31 + X) rem 1000003 end, 0, lists:seq(1, N)).

%% --- lost update: two clients read the balance, then write what they computed -------

lost_update() ->
    start(es_counter),
    A = spawn(?MODULE, client, [es_client_a, 10, 80]),
    B = spawn(?MODULE, client, [es_client_b, 20, 10]),
    {A, B}.

client(Name, Amount, Pause) ->
    register(Name, self()),
    Balance = gen_server:call(es_counter, balance),
    timer:sleep(Pause),
    gen_server:call(es_counter, {set_balance, Balance + Amount}).

%% --- the servers ---------------------------------------------------------------------

start(Name) ->
    case whereis(Name) of
        undefined -> {ok, _} = gen_server:start({local, Name}, ?MODULE, Name, []);
        _ -> ok
    end.

init(sup) ->
    Worker = #{id => es_worker, start => {gen_server, start_link,
                                          [{local, es_worker}, ?MODULE, es_worker, []]}},
    {ok, {#{strategy => one_for_one, intensity => 3, period => 10}, [Worker]}};
init(es_worker) ->
    Helper = spawn_link(fun() -> receive never -> ok end end),
    {ok, #{helper => Helper, charged => 0}};
init(es_counter) ->
    {ok, #{balance => 100, writes => 0}};
init(Name) ->
    {ok, #{name => Name, served => 0}}.

handle_call(transfer, _From, State) ->
    Audit = (catch gen_server:call(es_dl_b, audit, 3000)),
    {reply, Audit, State};
handle_call(task_transfer, _From, State) ->
    Task = 'Elixir.Task':async(fun() -> catch gen_server:call(es_dl_a, balance, 1000) end),
    {reply, 'Elixir.Task':await(Task, 3000), State};
handle_call(transfer_forever, _From, State) ->
    {reply, gen_server:call(es_dl_b, audit_forever, infinity), State};
handle_call(audit_forever, _From, State) ->
    {reply, gen_server:call(es_dl_a, balance, infinity), State};
handle_call(audit, _From, State) ->
    Balance = (catch gen_server:call(es_dl_a, balance, 1000)),
    {reply, Balance, State};
handle_call(balance, _From, #{balance := Balance} = State) ->
    {reply, Balance, State};
handle_call(balance, _From, State) ->
    {reply, 100, State};
handle_call({set_balance, Balance}, _From, #{writes := Writes} = State) ->
    {reply, ok, State#{balance := Balance, writes := Writes + 1}};
handle_call({fetch, Id}, _From, #{served := Served} = State) ->
    {reply, {ok, {item, Id}}, State#{served := Served + 1}};
handle_call({get, I}, _From, State) ->
    Answer = case I rem 40 of
                 17 -> gen_server:call(es_backend, {query, I}, 5000);
                 _ -> timer:sleep(2), {row, I}
             end,
    {reply, Answer, State};
handle_call({query, I}, _From, State) ->
    timer:sleep(300),
    {reply, {row, I}, State};
handle_call({crunch, N}, _From, State) ->
    {reply, crunch(N), State}.

handle_cast({crunch_for, Ms}, State) ->
    Until = erlang:monotonic_time(millisecond) + Ms,
    {noreply, crunch_until(Until, State)};
handle_cast({charge, Amount}, #{charged := Charged} = State) ->
    {noreply, State#{charged := Charged + 100 div Amount}};
handle_cast({job, _I}, #{served := Served} = State) ->
    timer:sleep(3),
    {noreply, State#{served := Served + 1}}.

handle_info(_Message, State) ->
    {noreply, State}.
