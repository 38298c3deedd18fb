%% ElixirScope's agent: compiled on the traced node at attach time.
%%
%% The Python side sends this source, with the module name replaced by one that
%% carries the ElixirScope version and the session, and compiles it from forms (erl_scan, erl_parse,
%% compile:forms, code:load_binary). It is never written to disk. There is no
%% preprocessor on that path, so the source uses no macros and no includes.
%%
%% Processes:
%%   relay    the tracer. Receives trace messages, samples, enforces the limits,
%%            packs compact batches and sends them to the owner (a pid on the
%%            Python side) with nosuspend: when the distribution buffer is busy the
%%            batch is dropped and counted, the traced system never waits.
%%   watcher  holds a copy of what the relay set (patterns and flags). When the
%%            relay ends, for whatever reason (owner gone, network gone, killed by
%%            its heap limit), or the owner goes away while the relay is busy, the
%%            watcher removes all of it and unloads this module.
%%
%% Safety trade-offs, where they are decided:
%%   * What a traced call ships is decided before the VM copies it: calls are traced
%%     with the arity flag, and each pattern's {message, ...} body names what goes
%%     (see clause_ms/3). A behaviour callback's state argument never goes; an
%%     argument or value that turns out large stops going (elide_large_args/5,
%%     time_only_if_large/6); under overload, hot leaf functions leave the trace
%%     (shed_hottest/1). Per-call cost then does not grow with the size of the
%%     process state.
%%   * Limits are checked every 100 ms and every 256 trace messages, whichever comes
%%     first, so a count limit may be passed by up to 255 events.
%%   * Limits are counted in the relay, on events it keeps (after sampling). A flood
%%     the relay cannot keep up with shows as a growing mailbox; the watcher stops
%%     the tracing at max_relay_memory_mb (the relay's memory counted whole, its
%%     queue included) or max_queue_len, and the relay's max_heap_size (kill) is a
%%     last resort above that. Adaptive sampling lowers the kept share as the kept
%%     rate nears max_events_per_second, and the sampling happens in the VM, on a
%%     bit of the trace control word (duty_cycle/1), so skipped calls cost nothing;
%%     the rate breaker trips only after a second at the sampling floor.
%%   * Call tracing of a process ("calls" or "state" in trace_process) needs a pattern
%%     on every function of the node (trace_pattern({'_','_','_'}, ...)), guarded to
%%     the process; every global call in every process then passes a breakpoint
%%     check. BIFs, the behaviour loops and sys are left out. It is removed with the
%%     trace.
%%   * State capture keeps the last state it sent of each process, so the next one
%%     goes as a structural delta. Those copies live in the relay's heap, bounded by
%%     max_state_memory_mb (past it a process's states go as keyframes only) and by
%%     the relay's memory bound; a state over max_state_bytes is reported, not sent,
%%     and that process's callbacks stop shipping their values.
%%   * Payloads are sized with erlang:external_size/1 (no encoding is built) and
%%     capped at max_term_bytes; a bigger term keeps its outer shape (a map keeps its
%%     first entries, a list its first elements, a binary its first bytes) and the
%%     record is flagged as truncated with the original size.
-module(elixirscope_agent).

-export([start/2, request/2, request/3, capabilities/0, conflicts/1]).
-export([relay_init/3, watcher_init/4]).
%% The telemetry handler of framework traces (see framework_event/4).
-export([framework_event/4]).
%% For tests: the delta the agent sends from one state to the next.
-export([diff/2]).

%% Record kinds in a batch (the Python side has the same table).
-record(st, {
    owner, owner_mon, watcher, session,
    limits,
    traces = #{},
    next_idx = 1,
    pids = #{}, new_pids = [],
    mfas = #{}, new_mfas = [],
    routes = #{}, routes_version = 0,
    members = #{},
    stacks = #{},
    buf = [], payloads = [], buf_n = 0, buf_bytes = 0, buf_refs = #{},
    seq = 0,
    received = 0, kept = 0, dropped = 0, sampled_out = 0, truncated = 0, discarded = 0,
    window_start = 0, window_kept = 0, window_rate = 0,
    adaptive = 1.0,
    %% The bit of the trace control word the traced functions sample on, once they
    %% sample in the VM (see duty_cycle/1), or false.
    duty = false,
    vm_skipped = 0.0,
    %% Since when sampling has kept its floor share (ms), or undefined.
    floor_since = undefined,
    started_at = 0,
    tripped = false,
    applied_patterns = #{},
    applied_flags = #{},
    flush_timer = undefined,
    stop_notice = undefined,
    kept_base = 0,
    %% State capture: Mfa => {Role, any | [Pid]}; Pid => {N, {Changes, DeltaBytes}, Last,
    %% Bytes} (since the last whole state; Bytes is its size) or
    %% {N, unknown}; Pid => [old state of each open callback].
    state_roles = #{},
    states = #{}, state_bytes = 0,
    pending = #{},
    checks = 0,
    %% What the relay learned of a function's calls: Mfa => #{elide => [{Position,
    %% '$elided'}], timed => true}, applied to its patterns (see clause_ms/3).
    adapt = #{},
    %% State capture of process traces: Pid => TRef for the roots whose state is
    %% captured, {Pid, Module} => true for the modules already looked at as the
    %% process's callback module, Pid => true for processes whose state went over
    %% max_state_bytes (their callbacks' values are no longer shipped), and the
    %% probes in flight, whose traffic with the processes is the debugger's own.
    state_pids = #{}, discovered = #{}, big_states = #{}, own = #{}, muted = #{},
    request_scan = 0,
    %% Hot functions (see shed_hottest/1): Mfa => calls, counted on one call in 16;
    %% and the functions seen making a traced call (Mfa => true), for the session.
    heat = #{},
    parents = #{},
    %% Process metrics (see sample_metrics/1): off, or #{top, every, last, reds}.
    metrics = off,
    %% Framework traces: the telemetry handlers attached (TRef => HandlerId), and each
    %% LiveView process's assigns and its components' (Pid => {Assigns, Components}).
    handlers = #{},
    live = #{},
    %% Framework spans open per process: Pid => [{Mfa, open | {ended, End}}].
    fw_open = #{}
}).

%% ---------------------------------------------------------------------------------
%% API used over rpc

start(Owner, Options) when is_pid(Owner), is_map(Options) ->
    Parent = self(),
    Ref = make_ref(),
    Limits = limits(maps:get(limits, Options, #{}), default_limits()),
    Relay = spawn(fun() -> relay_init(Parent, Ref, {Owner, Limits, Options}) end),
    MRef = monitor(process, Relay),
    receive
        {Ref, ok} ->
            demonitor(MRef, [flush]),
            {ok, Relay, capabilities()};
        {'DOWN', MRef, process, Relay, Reason} ->
            {error, {relay_failed, Reason}}
    after 10000 ->
        exit(Relay, kill),
        {error, timeout}
    end.

request(Relay, Request) ->
    request(Relay, Request, 15000).

request(Relay, Request, Timeout) ->
    MRef = monitor(process, Relay),
    Relay ! {es_req, self(), MRef, Request},
    receive
        {MRef, Reply} ->
            demonitor(MRef, [flush]),
            Reply;
        {'DOWN', MRef, process, Relay, Reason} ->
            {error, {relay_down, Reason}}
    after Timeout ->
        demonitor(MRef, [flush]),
        {error, timeout}
    end.

capabilities() ->
    OsMon = is_pid(whereis(cpu_sup)),
    Sessions = erlang:function_exported(trace, session_create, 3),
    Elixir = case application:get_key(elixir, vsn) of
                 {ok, Vsn} -> list_to_binary(Vsn);
                 undefined -> nil
             end,
    #{otp_release => list_to_binary(erlang:system_info(otp_release)),
      erts_version => list_to_binary(erlang:system_info(version)),
      elixir_version => Elixir,
      os_mon => OsMon,
      trace_sessions => Sessions,
      runtime_tools => code:which(dbg) =/= non_existing,
      schedulers => erlang:system_info(schedulers_online),
      time_offset_ns => erlang:time_offset(nanosecond),
      monotonic_ns => erlang:monotonic_time(nanosecond),
      node => node()}.

%% Who else traces the processes or functions we are about to trace. Returns a
%% list of readable descriptions (binaries); empty when nobody does.
conflicts(Targets) ->
    Pids = [P || {process, P} <- Targets],
    Mfas = [M || {function, M} <- Targets],
    Me = self(),
    ByProcess = [describe_tracer(T) || P <- [new | Pids],
                                        {tracer, T} <- [safe_trace_info(P, tracer)],
                                        T =/= [], T =/= Me],
    Dbg = case whereis(dbg) of
              undefined -> [];
              _ -> [<<"dbg (the dbg server is running)">>]
          end,
    ByPattern = [iolist_to_binary(io_lib:format("a trace pattern on ~p:~p/~p",
                                                [M, F, A]))
                 || {M, F, A} <- Mfas, is_atom(F), is_integer(A),
                    {traced, Tr} <- [erlang:trace_info({M, F, A}, traced)],
                    Tr =/= false],
    lists:usort(ByProcess ++ Dbg ++ ByPattern).

safe_trace_info(P, Item) ->
    try erlang:trace_info(P, Item) catch _:_ -> {Item, []} end.

describe_tracer(Tracer) when is_pid(Tracer) ->
    IsAgent = fun(M) -> lists:prefix("elixirscope_agent_", atom_to_list(M)) end,
    case {process_info(Tracer, registered_name), process_info(Tracer, current_function),
          process_info(Tracer, dictionary)} of
        {_, {current_function, {M, _, _}}, _} when is_atom(M) ->
            case IsAgent(M) of
                true -> iolist_to_binary(io_lib:format("another ElixirScope session (relay ~p)",
                                                       [Tracer]));
                false -> describe_process(Tracer)
            end;
        _ -> describe_process(Tracer)
    end;
describe_tracer(Tracer) ->
    iolist_to_binary(io_lib:format("tracer ~p", [Tracer])).

describe_process(Tracer) ->
    case {process_info(Tracer, registered_name), process_info(Tracer, dictionary)} of
        {{registered_name, Name}, _} ->
            iolist_to_binary(io_lib:format("process ~p (~p)", [Name, Tracer]));
        {_, {dictionary, Dict}} when is_list(Dict) ->
            case proplists:get_value('$initial_call', Dict) of
                undefined -> iolist_to_binary(io_lib:format("process ~p", [Tracer]));
                Init -> iolist_to_binary(io_lib:format("process ~p started as ~p", [Tracer, Init]))
            end;
        _ ->
            iolist_to_binary(io_lib:format("process ~p", [Tracer]))
    end.

default_limits() ->
    #{max_events_per_second => 50000,
      max_events => 5000000,
      max_duration_s => 600,
      max_queue_len => 1000000,
      max_term_bytes => 4096,
      elide_arg_bytes => 2048,
      max_node_memory_mb => infinity,
      max_cpu_percent => infinity,
      max_relay_memory_mb => 256,
      max_relay_heap_mb => 1024,
      flush_interval_ms => 20,
      batch_events => 2000,
      min_sample_rate => 0.01,
      max_state_bytes => 262144,
      max_state_memory_mb => 64,
      state_keyframe_every => 64,
      state_probe_timeout_ms => 1000}.

limits(Given, Base) ->
    maps:merge(Base, maps:with(maps:keys(Base), Given)).

%% ---------------------------------------------------------------------------------
%% The relay

relay_init(Parent, Ref, {Owner, Limits, Options}) ->
    process_flag(trap_exit, true),
    %% Trace messages wait off the heap: queueing them costs the traced processes
    %% less, and the relay's heap limit bounds the relay's own work, not the queue
    %% (the queue is bounded by max_queue_len, which the watcher also guards).
    process_flag(message_queue_data, off_heap),
    set_heap_limit(Limits),
    Me = self(),
    Module = this_module(),
    Watcher = spawn(fun() -> watcher_init(Me, Module, Owner, Limits) end),
    Session = open_session(maps:get(session_name, Options, elixirscope), Me),
    Now = erlang:monotonic_time(millisecond),
    St = #st{owner = Owner, owner_mon = monitor(process, Owner), watcher = Watcher,
             session = Session, limits = Limits, started_at = Now, window_start = Now},
    erlang:send_after(100, self(), check),
    Parent ! {Ref, ok},
    relay_loop(St).

this_module() ->
    {module, M} = erlang:fun_info(fun this_module/0, module),
    M.

set_heap_limit(Limits) ->
    case maps:get(max_relay_heap_mb, Limits) of
        infinity -> ok;
        Mb ->
            Words = Mb * 1024 * 1024 div erlang:system_info(wordsize),
            process_flag(max_heap_size, #{size => Words, kill => true, error_logger => true})
    end.

relay_loop(St) ->
    receive
        Msg when element(1, Msg) =:= trace_ts ->
            St1 = on_trace(Msg, St),
            %% The periodic check message queues behind a flood, so the limits are
            %% also checked every 256 trace messages, and a request waiting behind
            %% the flood is looked for (at most every 100 ms: the look scans the queue).
            case St1#st.received band 255 of
                0 -> relay_loop(serve_waiting_request(check_limits(St1)));
                _ -> relay_loop(St1)
            end;
        {es_req, From, Ref, Request} ->
            relay_loop(serve(From, Ref, Request, St));
        {es_fw, Pid, Ts, Items} ->
            relay_loop(on_framework(Pid, Ts, Items, St));
        {flush, Ref} ->
            case St#st.flush_timer of
                {_, Ref} -> relay_loop(flush(St#st{flush_timer = undefined}));
                _ -> relay_loop(St)
            end;
        check ->
            erlang:send_after(100, self(), check),
            relay_loop(sample_metrics(follow_names(sweep_states(check_limits(St)))));
        {es_state_probe, TRef, Pid, Ts, {ok, State, Mods}, Probe} ->
            %% The modules the process runs now (a gen_server2 that became another
            %% module, a gen_event manager's handlers): their callbacks are traced
            %% from here on, loaded if need be.
            St1 = on_state_probe(TRef, Pid, Ts, {ok, State},
                                 St#st{own = maps:remove(Probe, St#st.own)}),
            relay_loop(lists:foldl(fun(Mod, Acc) -> discover_state({Mod, state, 0}, Pid, Acc)
                                   end, St1, Mods));
        {es_state_probe, TRef, Pid, Ts, Result, Probe} ->
            St1 = St#st{own = maps:remove(Probe, St#st.own)},
            relay_loop(on_state_probe(TRef, Pid, Ts, Result, St1));
        {es_own, Probe} ->
            relay_loop(St#st{own = (St#st.own)#{Probe => true}});
        {stop_trace_after, TRef} ->
            {_, St1} = handle_request({stop_trace, TRef}, St),
            relay_loop(St1);
        {'DOWN', MRef, process, _, _} when MRef =:= St#st.owner_mon ->
            %% The Python side is gone (it exited, was killed, or the network dropped).
            remove_all(St),
            exit(normal);
        {guard_tripped, Reason, Details} when St#st.tripped =:= false ->
            %% The watcher already removed the tracing and told the owner; what was
            %% captured goes out, then the owner gets the counters as they stand.
            St1 = St#st{applied_patterns = #{}, applied_flags = #{}, members = #{},
                        handlers = #{}},
            St2 = flush(St1),
            relay_loop(notify_stop((mark_tripped(Reason, St2))#st{
                stop_notice = {es_stopped, Reason, maps:merge(counters(St2), Details)}}));
        {'EXIT', _, _} ->
            relay_loop(St);
        _Other ->
            relay_loop(St)
    end.

serve(From, Ref, Request, St) ->
    {Reply, St1} = try handle_request(Request, St)
                   catch Class:Reason:Stack -> {{error, {internal, Class, Reason, Stack}}, St}
                   end,
    From ! {Ref, Reply},
    St1.

%% The look scans the whole queue, so a longer queue is looked through less often: every
%% 100 ms up to 50,000 messages, every second from 500,000 on.
serve_waiting_request(St) ->
    Now = erlang:monotonic_time(millisecond),
    {message_queue_len, Queue} = process_info(self(), message_queue_len),
    case Now - St#st.request_scan >= min(1000, 100 * max(1, Queue div 50000)) of
        false -> St;
        true ->
            receive
                {es_req, From, Ref, Request} ->
                    serve(From, Ref, Request, St#st{request_scan = Now})
            after 0 -> St#st{request_scan = Now}
            end
    end.

%% ---------------------------------------------------------------------------------
%% Trace messages -> records

%% After a trip the trace messages still queued are discarded, and counted apart from
%% the dropped ones (events kept but not delivered).
on_trace(_Msg, St = #st{tripped = Tripped}) when Tripped =/= false ->
    St#st{received = St#st.received + 1, discarded = St#st.discarded + 1};
on_trace(Msg, St0) ->
    St = St0#st{received = St0#st.received + 1},
    case classify(Msg) of
        {call, Pid, {'Elixir.Phoenix.PubSub', F, _} = Mfa, Args, _, none, Ts}
          when is_list(Args), map_size(St#st.handlers) > 0 ->
            on_broadcast(Pid, Mfa, broadcast_args(F, Args), Ts, St);
        {call, Pid, {'Elixir.Phoenix.Channel.Server', reply, 6} = Mfa,
         [_, _, Ref, Topic, Reply, _], _, none, Ts} when map_size(St#st.handlers) > 0 ->
            on_channel_reply(Pid, Mfa, [Topic, Ref], Reply, Ts, St);
        {call, Pid, Mfa, Args, Caller, Ends, Ts} ->
            case recorded_call(Mfa, Pid, Args, discover_state(Mfa, Pid, St)) of
                {false, Seen} -> skip_call(Pid, Mfa, Ends, Seen);
                {true, Seen} -> on_call(Pid, Mfa, Args, Caller, Ends, Ts, Seen)
            end;
        {Kind, Pid, Mfa, Value, Ts} when Kind =:= return; Kind =:= exception ->
            St0a = end_timed_above(Pid, Ts, St),
            {{_, _, Refs}, Routed0} = call_route(Mfa, Pid, St0a),
            {Role, Old, Routed} = state_on_return(Mfa, Pid, Routed0),
            case pop(Pid, Routed) of
                {false, St1} -> sampled_out(Refs, St1);
                {skip, St1} -> St1;
                {true, St1} when Kind =:= return ->
                    {Size, St2} = record_sized(2, 0, Pid, Ts, Mfa, 0, strip_return(Role, Value),
                                               Refs, St1),
                    St3 = time_only_if_large(Size, Role, Pid, Mfa, Value, St2),
                    state_on_result(Role, Old, Value, Pid, Ts, Mfa, Refs, St3);
                {true, St1} ->
                    record(3, 0, Pid, Ts, Mfa, 0, Value, Refs, St1)
            end;
        {return_to, Pid, Into, Ts} ->
            returned_into(Pid, Into, Ts, St);
        {4, Pid, _, _, _, _} when is_map_key(Pid, St#st.muted) ->
            St#st{muted = maps:remove(Pid, St#st.muted)};
        {Code, Pid, Other, Mfa, Value, Ts} when map_size(St#st.own) > 0,
                                                (Code =:= 4 orelse Code =:= 6) ->
            case is_own(Code, Other, Value, St#st.own) of
                true -> St;
                false -> process_event(Code, Pid, Other, Mfa, Value, Ts, St)
            end;
        {Code, Pid, Other, Mfa, Value, Ts} ->
            process_event(Code, Pid, Other, Mfa, Value, Ts, St);
        ignore ->
            St
    end.

process_event(Code, Pid, Other, Mfa, Value, Ts, St) ->
    St1 = adopt_on_spawn(Code, Pid, Other, Ts, St),
    case membership(Pid, St1) of
        {rejected, TRef} -> maybe_forget(Code, Pid, sampled_out([TRef], St1));
        Refs ->
            {OtherIdx, Flags, Payload, St2} = other(Other, Value, St1),
            St3 = maybe_forget(Code, Pid, St2),
            record(Code, Flags, Pid, Ts, Mfa, OtherIdx, Payload, Refs, St3)
    end.

on_call(Pid, Mfa, Args, Caller, Ends, Ts, St0) ->
    St = count_heat(Pid, Mfa, St0),
    {{Rate, WantArgs, Refs}, Routed0} = call_route(Mfa, Pid, St),
    {Role, Routed1} = state_on_call(Mfa, Pid, Args, Routed0),
    InVm = St#st.duty =/= false andalso is_map_key(duty, maps:get(Mfa, St#st.adapt, #{})),
    Routed = case InVm of
                 true -> count_vm_skipped(Refs, Routed1);
                 false -> Routed1
             end,
    case keep_call(Pid, Mfa, Rate, InVm, Ends, Caller, Routed) of
        {false, St1} ->
            state_after_call(Role, Pid, Ts, Mfa, Args, Refs, sampled_out(Refs, St1));
        {true, St1} ->
            Payload = if WantArgs -> Args; true -> [] end,
            {CallerIdx, St2} = case Caller of
                                   none -> {0, St1};
                                   _ -> caller_index(Caller, St1)
                               end,
            Flags = (if Caller =:= none -> 0; true -> 4 end) bor
                (if Ends =:= none -> 0; true -> 8 end),
            {Size, St3} = record_sized(1, Flags, Pid, Ts, Mfa, CallerIdx, Payload,
                                       Refs, St2),
            St4 = elide_large_args(Size, Pid, Mfa, Args, St3),
            state_after_call(Role, Pid, Ts, Mfa, Args, Refs, St4)
    end.

sampled_out(Refs, St) ->
    Traces = lists:foldl(fun(R, Acc) -> bump_trace(R, sampled_out, 1, Acc) end,
                         St#st.traces, Refs),
    St#st{sampled_out = St#st.sampled_out + 1, traces = Traces}.

bump_trace(Ref, Key, N, Traces) ->
    case Traces of
        #{Ref := T = #{Key := V}} -> Traces#{Ref := T#{Key := V + N}};
        _ -> Traces
    end.

%% {Code, Pid, OtherPidOrNone, Mfa, Payload, Ts} for process events.
%% Calls come with the arity flag: the VM copies into the trace message only what the
%% pattern's {message, {Args, Caller, Ends}} asks for (see clause_ms/3), never the
%% whole argument list by itself. Ends says what closes the call: value (a return or
%% exception with its value follows), time (a return_to, without the value) or none.
classify({trace_ts, Pid, call, {M, F, A}, {Args, Caller, Ends}, Ts}) when is_integer(A) ->
    {call, Pid, {M, F, A}, Args, Caller, Ends, Ts};
classify({trace_ts, Pid, call, {M, F, A}, _, Ts}) when is_integer(A) ->
    {call, Pid, {M, F, A}, '$not_recorded', none, none, Ts};
classify({trace_ts, Pid, call, {M, F, A}, Ts}) when is_integer(A) ->
    {call, Pid, {M, F, A}, '$not_recorded', none, none, Ts};
classify({trace_ts, Pid, return_from, Mfa, Value, Ts}) -> {return, Pid, Mfa, Value, Ts};
classify({trace_ts, Pid, exception_from, Mfa, Value, Ts}) -> {exception, Pid, Mfa, Value, Ts};
classify({trace_ts, Pid, return_to, Mfa, Ts}) -> {return_to, Pid, Mfa, Ts};
classify({trace_ts, Pid, send, Msg, To, Ts}) -> {4, Pid, To, none, Msg, Ts};
classify({trace_ts, Pid, send_to_non_existing_process, Msg, To, Ts}) -> {5, Pid, To, none, Msg, Ts};
classify({trace_ts, Pid, 'receive', Msg, Ts}) -> {6, Pid, none, none, Msg, Ts};
classify({trace_ts, Pid, spawn, Child, {M, F, A}, Ts}) -> {7, Pid, Child, {M, F, length(A)}, A, Ts};
classify({trace_ts, Pid, spawned, Parent, {M, F, A}, Ts}) -> {8, Pid, Parent, {M, F, length(A)}, A, Ts};
classify({trace_ts, Pid, exit, Reason, Ts}) -> {9, Pid, none, none, Reason, Ts};
classify({trace_ts, Pid, link, Other, Ts}) -> {10, Pid, Other, none, [], Ts};
classify({trace_ts, Pid, unlink, Other, Ts}) -> {11, Pid, Other, none, [], Ts};
classify({trace_ts, Pid, getting_linked, Other, Ts}) -> {12, Pid, Other, none, [], Ts};
classify({trace_ts, Pid, getting_unlinked, Other, Ts}) -> {13, Pid, Other, none, [], Ts};
classify({trace_ts, Pid, register, Name, Ts}) -> {14, Pid, none, none, Name, Ts};
classify({trace_ts, Pid, unregister, Name, Ts}) -> {15, Pid, none, none, Name, Ts};
classify(_) -> ignore.

other(none, Value, St) -> {0, 0, Value, St};
other(Pid, Value, St) when is_pid(Pid) ->
    {Idx, St1} = pid_index(Pid, St),
    {Idx, 0, Value, St1};
other(Port, Value, St) when is_port(Port) -> {0, 2, {Port, Value}, St};
other(Name, Value, St) when is_atom(Name) ->
    %% Resolved now rather than at the send: a name that moved in between is rare
    %% and the receiver is what correlation needs.
    case whereis(Name) of
        Pid when is_pid(Pid) ->
            {Idx, St1} = pid_index(Pid, St),
            {Idx, 2, {Name, Value}, St1};
        _ -> {0, 2, {Name, Value}, St}
    end;
other(Name, Value, St) -> {0, 2, {Name, Value}, St}.

caller_index({M, F, A}, St) when is_atom(M), is_atom(F), is_integer(A) ->
    mfa_index({M, F, A}, St);
caller_index(_, St) ->
    {0, St}.

%% Sampling of calls: the decision for a call is remembered on the process's stack of
%% open frames, {Mfa, Keep, Ends}, so what closes it is kept or dropped with it.
keep(_Pid, Rate, St) ->
    {Rate >= 1.0 andalso St#st.adaptive >= 1.0
         orelse rand:uniform() < Rate * St#st.adaptive, St}.

%% Each call of a function the VM samples stands for the calls the VM skipped while
%% the duty bit was clear: (1 - A) / A of them on average, A being the share kept.
%% They count as sampled out (an estimate; the VM sends nothing for them).
count_vm_skipped(Refs, St = #st{adaptive = A}) when A < 1.0 ->
    Skipped = St#st.vm_skipped + (1 - A) / A,
    case trunc(Skipped) of
        0 -> St#st{vm_skipped = Skipped};
        Whole ->
            Traces = lists:foldl(fun(R, Acc) -> bump_trace(R, sampled_out, Whole, Acc) end,
                                 St#st.traces, Refs),
            St#st{vm_skipped = Skipped - Whole, sampled_out = St#st.sampled_out + Whole,
                  traces = Traces}
    end;
count_vm_skipped(_, St) -> St.

%% A call of a function the VM samples (InVm: its pattern is guarded by the duty
%% bit) was taken by the VM's sampling already: the relay keeps it.
keep_call(Pid, Mfa, Rate, InVm, Ends, Caller, St) ->
    {Keep, St1} = case InVm of
                      true -> {Rate >= 1.0 orelse rand:uniform() < Rate, St};
                      false -> keep(Pid, Rate, St)
                  end,
    case Ends of
        none -> {Keep, St1};
        value -> {Keep, push_frame(Pid, {Mfa, Keep, value}, St1)};
        time -> {Keep, push_frame(Pid, {Mfa, Keep, {time, Caller}}, St1)}
    end.

push_frame(Pid, Frame, St = #st{stacks = Stacks}) ->
    St#st{stacks = Stacks#{Pid => [Frame | maps:get(Pid, Stacks, [])]}}.

set_stack(Pid, [], St) -> St#st{stacks = maps:remove(Pid, St#st.stacks)};
set_stack(Pid, Stack, St) -> St#st{stacks = (St#st.stacks)#{Pid => Stack}}.

pop(Pid, St) ->
    case maps:get(Pid, St#st.stacks, []) of
        [{_, Keep, _} | Rest] -> {Keep, set_stack(Pid, Rest, St)};
        [] -> {true, St}
    end.

%% A frame closed by time only (its function's values are not shipped: they were too
%% large) ends when the VM says the process returned into the function that called
%% it. A chain of tail calls returns once, so every frame of the chain, all called
%% from there, ends then; a frame whose caller the VM could not tell ends alone.
returned_into(Pid, Into, Ts, St) ->
    case maps:get(Pid, St#st.stacks, []) of
        [{Mfa, Keep, {time, Caller}} | Rest] when Caller =:= Into ->
            returned_into(Pid, Into, Ts, timed_end(Pid, Mfa, Keep, Ts, set_stack(Pid, Rest, St)));
        [{Mfa, Keep, {time, Caller}} | Rest] when not is_tuple(Caller) ->
            timed_end(Pid, Mfa, Keep, Ts, set_stack(Pid, Rest, St));
        _ -> St
    end.

%% A return or exception with its value closes its own frame; frames closed by time
%% that are still above it ended before it.
end_timed_above(Pid, Ts, St) ->
    case maps:get(Pid, St#st.stacks, []) of
        [{Mfa, Keep, {time, _}} | Rest] ->
            end_timed_above(Pid, Ts, timed_end(Pid, Mfa, Keep, Ts, set_stack(Pid, Rest, St)));
        _ -> St
    end.

%% What the VM copies into a call's trace message is decided before the copy, by the
%% function's pattern. When a call's arguments turn out large (past elide_arg_bytes:
%% typically a process state handed from function to function), the positions that
%% are large, binaries aside (the VM shares those rather than copying them), are no
%% longer shipped; when a return value does, the function's calls are closed by time
%% alone. Either costs one pattern change per function, and the calls in between
%% still arrive whole.
elide_large_args(Size, Pid, Mfa, Args, St = #st{limits = L}) when is_list(Args) ->
    Max = map_get(elide_arg_bytes, L),
    case is_integer(Max) andalso Size > Max andalso narrowable(Mfa, Pid, St) of
        false -> St;
        {true, St1} ->
            Known = maps:get(elide, maps:get(Mfa, St1#st.adapt, #{}), []),
            Large = [{I, '$elided'} || {I, A} <- lists:zip(lists:seq(1, length(Args)), Args),
                                       not is_binary(A), not lists:keymember(I, 1, Known),
                                       erlang:external_size(A) > Max div 2],
            case Large of
                [] -> St1;
                _ -> readapt(Mfa, elide, lists:ukeysort(1, Known ++ Large), St1)
            end
    end;
elide_large_args(_, _, _, _, St) -> St.

time_only_if_large(Size, none, Pid, Mfa, Value, St = #st{adapt = Adapt, limits = L})
  when not is_binary(Value) ->
    Max = map_get(elide_arg_bytes, L),
    Timed = maps:get(timed, maps:get(Mfa, Adapt, #{}), false),
    case is_integer(Max) andalso Size > Max andalso not Timed
        andalso narrowable(Mfa, Pid, St) of
        {true, St1} -> readapt(Mfa, timed, true, St1);
        false -> St
    end;
time_only_if_large(_, _, _, _, _, St) -> St.

%% A function can be narrowed when it has a pattern of its own. One reached only
%% through a process trace's pattern on every function gets one, guarded to that
%% process (local: a call closed by time needs a local pattern).
narrowable(Mfa, Pid, St) ->
    case {has_pattern(Mfa, St), membership(Pid, St)} of
        {true, _} -> {true, St};
        {false, [TRef]} ->
            case St#st.traces of
                #{TRef := T = #{kind := process, pid := Pid, patterns := Ps}} ->
                    Pin = {Mfa, local, [capture([{'=:=', {self}, Pid}], value, false)]},
                    {true, St#st{traces = (St#st.traces)#{TRef := T#{patterns := Ps ++ [Pin]}}}};
                _ -> false
            end;
        _ -> false
    end.

has_pattern(Mfa, St) -> maps:is_key(Mfa, St#st.applied_patterns).

readapt(Mfa, Key, Value, St = #st{adapt = Adapt}) ->
    apply_state(St#st{adapt = Adapt#{Mfa => (maps:get(Mfa, Adapt, #{}))#{Key => Value}}}).

%% Flag 32: the call ended here; how (a value or an exception) was not recorded.
timed_end(_, _, skip, _, St) -> St;
timed_end(Pid, Mfa, Keep, Ts, St) ->
    {{_, _, Refs}, St1} = call_route(Mfa, Pid, St),
    case Keep of
        true -> record(2, 32, Pid, Ts, Mfa, 0, '$not_recorded', Refs, St1);
        false -> sampled_out(Refs, St1)
    end.

%% The system message a state probe of ours sends a process, and the process's reply
%% to it, are the debugger's own traffic: never recorded.
%% Handling a probe's system message, the process looks up the callback that gives
%% its state, then replies (gen:reply/2, whose send goes to an alias of the probe):
%% that call is dropped, and so is the process's next send.
own_call({gen, reply, 2}, [{From, _} | _], Own) when is_map_key(From, Own) -> reply;
own_call({erlang, function_exported, 3}, [_, system_get_state, 1], _) -> internal;
own_call(_, _, _) -> false.

is_own(4, To, _, Own) -> is_map_key(To, Own);
is_own(6, _, {system, {From, _}, _}, Own) -> is_map_key(From, Own);
is_own(_, _, _, _) -> false.

%% A call reached only through a process trace's pattern on every function is
%% recorded when that trace records calls (it may be there for state capture only).
%% One that is not still gets a frame, so its return is matched and dropped too.
recorded_call(Mfa, Pid, Args, St) ->
    case map_size(St#st.own) > 0 andalso own_call(Mfa, Args, St#st.own) of
        reply -> {false, St#st{muted = (St#st.muted)#{Pid => true}}};
        internal -> {false, St};
        false -> {wanted_call(Mfa, Pid, St), St}
    end.

wanted_call({gen, call, 4}, Pid, St) ->
    is_map_key(Pid, St#st.stacks) orelse is_map_key(Pid, St#st.members);
wanted_call(Mfa, Pid, St) ->
    maps:is_key(Mfa, St#st.applied_patterns) orelse
        case membership(Pid, St) of
            [TRef] -> maps:get(calls, maps:get(TRef, St#st.traces, #{}), true);
            _ -> true
        end.

skip_call(_, _, none, St) -> St;
skip_call(Pid, Mfa, Ends, St) -> push_frame(Pid, {Mfa, skip, Ends}, St).

%% The callback module a process runs now: a process whose state is captured and
%% that runs a function of a callback module not yet known as its own (a gen_server2
%% that became another module calls its prioritise_cast/3 or handle_cast/2) gets that
%% module's state callbacks traced, guarded to it, from this very call on.
discover_state(_, _, St = #st{state_pids = Roots}) when map_size(Roots) =:= 0 -> St;
discover_state({M, _, _} = Mfa, Pid, St = #st{state_pids = Roots, discovered = Seen}) ->
    case Roots of
        #{Pid := TRef} when not is_map_key({Pid, M}, Seen) ->
            St1 = St#st{discovered = Seen#{{Pid, M} => true}},
            case state_role(Mfa, Pid, St1) =:= none andalso state_engine(M) of
                {Engine, M} -> adopt_engine(TRef, {Engine, M}, Pid, St1);
                _ -> St1
            end;
        _ -> St
    end.

adopt_engine(TRef, Engine, Pid, St) ->
    case St#st.traces of
        #{TRef := T} ->
            Adopted = maps:remove(state_probe, with_state(T, Engine, Pid)),
            apply_state(St#st{traces = (St#st.traces)#{TRef := Adopted},
                              routes_version = St#st.routes_version + 1});
        _ -> St
    end.

maybe_forget(9, Pid, St) ->
    drop_state(Pid, St#st{stacks = maps:remove(Pid, St#st.stacks),
                          members = maps:remove(Pid, St#st.members),
                          pending = maps:remove(Pid, St#st.pending)});
maybe_forget(_, _, St) -> St.

%% A child spawned by a member of a process trace with include_children inherits
%% the trace flags through set_on_spawn. With a sample rate below 1 only that share
%% stays traced; the others are untraced at once and what they still emitted counts
%% as sampled out. The parent's spawn event and the child's spawned event come from
%% two processes in either order, so whichever arrives first decides.
adopt_on_spawn(7, Parent, Child, Ts, St) when is_pid(Child) -> decide(Child, Parent, Ts, St);
adopt_on_spawn(8, Child, Parent, Ts, St) when is_pid(Parent) -> decide(Child, Parent, Ts, St);
adopt_on_spawn(_, _, _, _, St) -> St.

%% An adopted child starts with an empty mailbox: every message it gets is received
%% while traced (its mailbox record says so, for the pairing of its callbacks).
decide(Child, Parent, Ts, St = #st{members = Members}) ->
    case {maps:is_key(Child, Members), maps:get(Parent, Members, undefined)} of
        {false, {rejected, TRef}} ->
            catch tr_process(St#st.session, Child, false, [all]),
            St#st{members = Members#{Child => {rejected, TRef}}};
        {false, undefined} -> St;
        {false, TRef} ->
            case maps:get(TRef, St#st.traces, undefined) of
                #{children := true, child_rate := Rate} ->
                    case Rate >= 1.0 orelse rand:uniform() < Rate of
                        true ->
                            record(18, 0, Child, Ts, none, 0,
                                   #{message_queue_len => 0, backlog => backlog(Child, 0, 0)},
                                   [], St#st{members = Members#{Child => TRef}});
                        false ->
                            catch tr_process(St#st.session, Child, false, [all]),
                            St#st{members = Members#{Child => {rejected, TRef}}}
                    end;
                _ -> St
            end;
        {true, _} -> St
    end.

%% The refs of the process trace a process belongs to (its root, or an adopted
%% child), or {rejected, Ref} for a child left out by sampling.
membership(Pid, St) ->
    case St#st.members of
        #{Pid := {rejected, _} = Rejected} -> Rejected;
        #{Pid := TRef} -> [TRef];
        _ -> []
    end.

%% {Rate, WantArgs, Refs} for a call of Mfa by Pid: the module and function traces
%% that cover the MFA (cached per MFA, recomputed when the traces change), and the
%% process trace of Pid if it traces calls.
call_route(Mfa, Pid, St) ->
    Version = St#st.routes_version,
    {{Rate, WantArgs, Refs}, St1} =
        case St#st.routes of
            #{Mfa := {Version, Cached}} -> {Cached, St};
            Routes ->
                Route = compute_route(Mfa, St),
                {Route, St#st{routes = Routes#{Mfa => {Version, Route}}}}
        end,
    case Refs of
        [] ->
            ProcessRefs = case membership(Pid, St1) of
                              {rejected, _} -> [];
                              Member -> Member
                          end,
            {{1.0, true, ProcessRefs}, St1};
        _ -> {{Rate, WantArgs, Refs}, St1}
    end.

compute_route({M, F, A}, St) ->
    Matching = [T || T <- maps:values(St#st.traces), covers(T, M, F, A)],
    case Matching of
        [] -> {1.0, true, []};
        _ ->
            {lists:max([maps:get(rate, T) || T <- Matching]),
             lists:any(fun(T) -> maps:get(want_args, T) end, Matching),
             [R || {R, T} <- maps:to_list(St#st.traces), covers(T, M, F, A)]}
    end.

covers(#{kind := module, module := M, functions := Fs}, M, F, A) ->
    lists:member({F, A}, Fs);
covers(#{kind := function, module := M, function := F, arity := Ar}, M, F, A) ->
    Ar =:= '_' orelse Ar =:= A;
covers(#{kind := framework, patterns := Ps}, M, F, A) ->
    lists:keymember({M, F, A}, 1, Ps);
covers(_, _, _, _) -> false.

pid_index(Pid, St = #st{pids = Pids}) ->
    case Pids of
        #{Pid := Idx} -> {Idx, St};
        _ ->
            Idx = St#st.next_idx,
            {Idx, St#st{pids = Pids#{Pid => Idx}, next_idx = Idx + 1,
                        new_pids = [{Idx, Pid} | St#st.new_pids]}}
    end.

mfa_index(Mfa, St = #st{mfas = Mfas}) ->
    case Mfas of
        #{Mfa := Idx} -> {Idx, St};
        _ ->
            Idx = St#st.next_idx,
            {Idx, St#st{mfas = Mfas#{Mfa => Idx},
                        next_idx = Idx + 1,
                        new_mfas = [{Idx, Mfa} | St#st.new_mfas]}}
    end.

%% One record: a 30-byte header in one block,
%%   <<Kind:8, Flags:8, Pid:32, Ts:64/signed, Mfa:32, Other:32, OrigSize:32, Len:32>>,
%% and its payload (Len bytes) in a second block, so Python reads all headers at once.
%% Flags: 1 payload truncated, 2 payload is {Target, Value} (target not a pid; Other
%%        is the process the name resolved to, or 0), 4 Other is the caller's MFA
%%        index, 8 a return or exception will follow this call.
%%        16 (state records) the payload is a whole state, not a delta.
%%        64 (calls) a span of the framework layer, from telemetry (on_framework/4).
record(Kind, Flags, Pid, Ts, Mfa, Other, Value, Refs, St) ->
    element(2, record_sized(Kind, Flags, Pid, Ts, Mfa, Other, Value, Refs, St)).

%% record/9, also giving the payload's size before any cut.
record_sized(Kind, Flags0, Pid, Ts, Mfa, Other, Value, Refs, St) ->
    {Payload, OrigSize, Truncated} = encode_payload(Value, maps:get(max_term_bytes, St#st.limits)),
    Flags = if Truncated -> Flags0 bor 1; true -> Flags0 end,
    {OrigSize, append(Kind, Flags, Pid, Ts, Mfa, Other, Payload, OrigSize, Refs, St)}.

append(Kind, Flags, Pid, Ts, Mfa, Other, Payload, OrigSize, Refs, St0) ->
    {PidIdx, St1} = pid_index(Pid, St0),
    {MfaIdx, St2} = case Mfa of
                        none -> {0, St1};
                        _ -> mfa_index(Mfa, St1)
                    end,
    Len = byte_size(Payload),
    Header = <<Kind:8, Flags:8, PidIdx:32, Ts:64/signed, MfaIdx:32, Other:32,
               OrigSize:32, Len:32>>,
    N = St2#st.buf_n + 1,
    Bytes = St2#st.buf_bytes + 30 + Len,
    BufRefs = count_refs(Refs, St2#st.buf_refs),
    St3 = St2#st{buf = [Header | St2#st.buf], payloads = [Payload | St2#st.payloads],
                 buf_n = N, buf_bytes = Bytes, buf_refs = BufRefs,
                 kept = St2#st.kept + 1, window_kept = St2#st.window_kept + 1,
                 truncated = St2#st.truncated + (Flags band 1)},
    Limits = St3#st.limits,
    if N >= map_get(batch_events, Limits); Bytes >= 262144 ->
           flush(St3);
       St3#st.flush_timer =:= undefined ->
           Ref = make_ref(),
           T = erlang:send_after(map_get(flush_interval_ms, Limits), self(), {flush, Ref}),
           St3#st{flush_timer = {T, Ref}};
       true ->
           St3
    end.

count_refs([], Counts) -> Counts;
count_refs([R | Rest], Counts) ->
    case Counts of
        #{R := N} -> count_refs(Rest, Counts#{R := N + 1});
        _ -> count_refs(Rest, Counts#{R => 1})
    end.

%% The size comes from erlang:external_size/1, which walks the term without building
%% its encoding: a term over the cap is never serialized whole, only its shrunk shape.
encode_payload(Value, Max) ->
    Size = erlang:external_size(Value),
    if Size =< Max -> {term_to_binary(Value), Size, false};
       true -> {shrink_to(Value, Max, 16), Size, true}
    end.

shrink_to(Value, Max, Keep) ->
    Bin = term_to_binary(shrink(Value, Keep, 3)),
    if byte_size(Bin) =< Max -> Bin;
       Keep > 1 -> shrink_to(Value, Max, Keep div 4);
       true -> term_to_binary(shape(Value))
    end.

%% The first Keep elements of every collection, Depth levels deep.
shrink(V, _, 0) -> shape(V);
shrink(V, Keep, Depth) when is_list(V) -> shrink_list(V, Keep, Depth);
shrink(V, Keep, Depth) when is_map(V) ->
    maps:from_list(take_map(maps:next(maps:iterator(V)), Keep, Depth));
shrink(V, Keep, Depth) when is_tuple(V) ->
    list_to_tuple([shrink(E, Keep, Depth - 1) || E <- tuple_to_list(V)]);
shrink(V, Keep, _) when is_binary(V), byte_size(V) > Keep * 16 ->
    binary:part(V, 0, Keep * 16);
shrink(V, Keep, _) when is_bitstring(V), bit_size(V) > Keep * 128 ->
    <<Part:(Keep * 128)/bitstring, _/bitstring>> = V,
    Part;
shrink(V, _, _) -> V.

shrink_list([], _, _) -> [];
shrink_list(_, 0, _) -> [];
shrink_list([H | T], Keep, Depth) -> [shrink(H, Keep, Depth - 1) | shrink_list(T, Keep - 1, Depth)];
shrink_list(Tail, _, Depth) -> shrink(Tail, 1, Depth - 1).

take_map(none, _, _) -> [];
take_map(_, 0, _) -> [];
take_map({K, V, I}, Keep, Depth) ->
    [{shrink(K, 1, 1), shrink(V, Keep, Depth - 1)} | take_map(maps:next(I), Keep - 1, Depth)].

%% The emptiest value of the same type.
shape(V) when is_list(V) -> [];
shape(V) when is_map(V) -> #{};
shape(V) when is_tuple(V) -> {};
shape(V) when is_binary(V) -> <<>>;
shape(V) when is_bitstring(V) -> <<>>;
shape(V) -> V.

flush(St = #st{buf_n = 0}) ->
    cancel_flush(St);
flush(St0) ->
    St = cancel_flush(St0),
    Seq = St#st.seq + 1,
    Stats = {St#st.received, St#st.kept, St#st.dropped, St#st.sampled_out, St#st.adaptive},
    Batch = {es_batch, Seq, lists:reverse(St#st.new_pids), lists:reverse(St#st.new_mfas),
             Stats, iolist_to_binary(lists:reverse(St#st.buf)),
             iolist_to_binary(lists:reverse(St#st.payloads))},
    Sent = St#st{seq = Seq, buf = [], payloads = [], buf_n = 0, buf_bytes = 0,
                 buf_refs = #{}, new_pids = [], new_mfas = []},
    Counted = fun(Key) ->
                      maps:fold(fun(R, N, Acc) -> bump_trace(R, Key, N, Acc) end,
                                St#st.traces, St#st.buf_refs)
              end,
    case erlang:send(St#st.owner, Batch, [nosuspend]) of
        ok -> Sent#st{traces = Counted(captured)};
        _Busy ->
            %% Counted as dropped, not as a gap: the sequence number only advances
            %% with batches that left, so a gap Python sees is loss nobody counted.
            %% The index entries of a dropped batch go again with the next one.
            %% States sent in the lost batch are gone too: the next state of every
            %% process goes whole.
            forget_states(Sent#st{seq = St#st.seq, dropped = St#st.dropped + St#st.buf_n,
                                  traces = Counted(dropped),
                                  new_pids = St#st.new_pids, new_mfas = St#st.new_mfas})
    end.

%% A timer that fires anyway leaves a {flush, Ref} whose Ref is no longer current,
%% and the loop ignores it. No selective receive: with a flood in the mailbox a
%% receive that scans for one message would read every message each time.
cancel_flush(St = #st{flush_timer = undefined}) -> St;
cancel_flush(St = #st{flush_timer = {T, _}}) ->
    erlang:cancel_timer(T, [{async, true}, {info, false}]),
    St#st{flush_timer = undefined}.

%% ---------------------------------------------------------------------------------
%% State capture
%%
%% The state callbacks of gen_server and gen_statem callback modules (Elixir's Agent
%% runs Agent.Server's) are traced with their returns. A callback's call pushes the
%% old state it was given; its return gives the new state, sent as a state record:
%%   {N, {key, State}}         whole (flag 16), every state_keyframe_every changes
%%                             (for large states: when the deltas add up to half),
%%                             when no earlier state is kept, or when a delta is
%%                             not smaller than the last whole state
%%   {N, {delta, Delta}}       against state N - 1 of the same process
%%   {N, same}                 the callback left the state as it was
%%   {N, {initial, State}}     read with sys:get_state/2 when the trace started (16)
%%   {N, {terminate, Reason}}  terminate was called; the state is unchanged
%%   {N, {too_large, Bytes}}   over max_state_bytes: not sent, the chain restarts
%%   {N, {unavailable, Why}}   the initial state could not be read
%% N counts a process's state records, so Python notices a lost one. The state in
%% the call's arguments and the return value is replaced by '$state' in the call
%% and return records: the state record carries it.
%%
%% Delta = {v, New} | {m, [{Key, Delta}], [RemovedKey]} | {t, [{Index, Delta}]}
%%       | {l, Prefix, Suffix, {v, Middle} | {e, [Delta | same]}} | {w, Added, Keep}
%% ({l, ...}: the first Prefix and last Suffix elements stay, the middle is replaced,
%% or changed element by element when it keeps its length; {w, ...}: the list is
%% Added followed by its first Keep elements).

%% {Engine, Module}: the behaviour engine whose callbacks carry the state transitions
%% of processes running M, and the module whose callbacks they are; or none. The
%% gen_server forks real systems run (RabbitMQ's gen_server2, ejabberd's p1_server)
%% call their callbacks as gen_server does. A module written on top of another
%% callback module (ejabberd_c2s on xmpp_stream_in) changes its state through that
%% module's callbacks, and a supervisor's state is kept by the supervisor module.
state_engine(M) ->
    case code:ensure_loaded(M) of
        {module, M} ->
            Declared = declared_behaviours(M),
            Table = [{['gen_server', 'Elixir.GenServer', gen_server2, p1_server], gen_server, M},
                     {[gen_statem], gen_statem, M},
                     {[gen_event], gen_event, M},
                     {[xmpp_stream_in], gen_server, xmpp_stream_in},
                     {[xmpp_stream_out], gen_server, xmpp_stream_out},
                     {[supervisor], gen_server, supervisor},
                     {[supervisor2], gen_server, supervisor2}],
            case [{E, Em} || {Bs, E, Em} <- Table, lists:any(fun(B) -> lists:member(B, Declared) end, Bs)] of
                [{Engine, Em} | _] when Em =:= M -> {Engine, M};
                [{Engine, Em} | _] ->
                    case code:ensure_loaded(Em) of
                        {module, Em} -> {Engine, Em};
                        _ -> none
                    end;
                [] ->
                    Exported = fun(F, A) -> erlang:function_exported(M, F, A) end,
                    case {Exported(handle_call, 3), Exported(callback_mode, 0)} of
                        {_, true} -> {gen_statem, M};
                        {true, _} -> {gen_server, M};
                        _ -> none
                    end
            end;
        _ -> none
    end.

declared_behaviours(M) ->
    lists:append([Bs || {K, Bs} <- M:module_info(attributes),
                        K =:= behaviour orelse K =:= behavior]).

%% {Engine, Module} of a running process, from its initial call (the process is not
%% asked: it may be busy, or not an OTP process at all); a gen_server2 that became
%% another module is found when that module's callbacks run (discover_state/3). An
%% Elixir Agent's initial call names the function it was started with; a
%% supervisor's is {supervisor, CallbackModule, 1}.
process_behaviour(Pid) ->
    Initial = case erlang:process_info(Pid, dictionary) of
                  {dictionary, D} -> proplists:get_value('$initial_call', D);
                  _ -> undefined
              end,
    case Initial of
        {Sup, _, 1} when Sup =:= supervisor; Sup =:= supervisor2 -> state_engine(Sup);
        %% A gen_event manager: its handlers are found by the state probe.
        {gen_event, init_it, _} -> {gen_event, gen_event};
        {M, F, _} when is_atom(M), is_atom(F) ->
            case state_engine(M) of
                none ->
                    case hd(atom_to_list(F)) =:= $- andalso in_gen_server(Pid) andalso
                        code:is_loaded('Elixir.Agent.Server') =/= false of
                        true -> {gen_server, 'Elixir.Agent.Server'};
                        false -> none
                    end;
                Engine -> Engine
            end;
        _ -> none
    end.

in_gen_server(Pid) ->
    case erlang:process_info(Pid, current_stacktrace) of
        {current_stacktrace, Frames} -> lists:keymember(gen_server, 1, Frames);
        _ -> false
    end.

%% The callbacks that change state, with their role.
state_callbacks(gen_server, M) ->
    Known = [{init, 1, gs_init}, {handle_call, 3, gs_call}, {handle_cast, 2, gs_noreply},
             {handle_info, 2, gs_noreply}, {handle_continue, 2, gs_noreply},
             {handle_post_hibernate, 1, gs_noreply}, {handle_pre_hibernate, 1, gs_hibernate},
             {code_change, 3, gs_code_change}, {terminate, 2, gs_terminate}],
    [{{M, F, A}, Role} || {F, A, Role} <- Known, erlang:function_exported(M, F, A)];
state_callbacks(gen_event, M) ->
    Known = [{init, 1, ge_init}, {handle_event, 2, ge_event}, {handle_info, 2, ge_event},
             {handle_call, 2, ge_call}, {code_change, 3, ge_code_change},
             {terminate, 2, ge_terminate}],
    [{{M, F, A}, Role} || {F, A, Role} <- Known, erlang:function_exported(M, F, A)];
state_callbacks(gen_statem, M) ->
    Modes = try M:callback_mode() of
                Mode when is_atom(Mode) -> [Mode];
                Mode when is_list(Mode) -> Mode;
                _ -> []
            catch _:_ -> []
            end,
    Fixed = [{init, 1, sm_init}, {code_change, 4, sm_code_change}, {terminate, 3, sm_terminate}]
        ++ [{handle_event, 4, sm_event} || lists:member(handle_event_function, Modes)],
    StateFunctions = case lists:member(state_functions, Modes) of
                         true -> [{F, 3, sm_state} || {F, 3} <- M:module_info(exports),
                                                      F =/= terminate, F =/= format_status];
                         false -> []
                     end,
    [{{M, F, A}, Role} || {F, A, Role} <- Fixed ++ StateFunctions,
                          erlang:function_exported(M, F, A)].

%% Adds the state callbacks of M to a trace: Scope is any (a module trace) or the
%% one process of a process trace, whose guard keeps other processes out.
with_state(T = #{patterns := Patterns}, {Engine, M}, Scope) ->
    Roles = state_callbacks(Engine, M),
    Guard = case Scope of any -> []; Pid -> [{'=:=', {self}, Pid}] end,
    %% Local: a call closed by time (return_to) needs a local pattern.
    Extra = [{Mfa, local, with_elided([capture(Guard, value, false)], role_elide(Role))}
             || {Mfa, Role} <- Roles],
    Functions = case T of
                    #{functions := Fs, module := M} ->
                        lists:usort(Fs ++ [{F, A} || {{_, F, A}, _} <- Roles]);
                    _ -> undefined
                end,
    T1 = T#{patterns => Patterns ++ Extra, state => Engine,
            state_roles => lists:usort(maps:get(state_roles, T, []) ++ Roles),
            state_probe => {M, case Scope of any -> any; _ -> [Scope] end}},
    case Functions of undefined -> T1; _ -> T1#{functions => Functions} end.

state_index(Traces) ->
    maps:fold(
      fun(_, T, Acc) ->
              Scope = case T of #{kind := process, pid := Root} -> [Root]; _ -> any end,
              lists:foldl(fun({Mfa, Role}, A) ->
                                  case {maps:get(Mfa, A, none), Scope} of
                                      {none, _} -> A#{Mfa => {Role, Scope}};
                                      {{_, any}, _} -> A;
                                      {{R, _}, any} -> A#{Mfa => {R, any}};
                                      {{R, Ps}, [One]} -> A#{Mfa => {R, [One | Ps]}}
                                  end
                          end, Acc, maps:get(state_roles, T, []))
      end, #{}, Traces).

state_role(_Mfa, _Pid, #st{state_roles = Roles}) when map_size(Roles) =:= 0 -> none;
state_role(_Mfa, Pid, #st{big_states = Big}) when is_map_key(Pid, Big) -> none;
state_role(Mfa, Pid, #st{state_roles = Roles}) ->
    case Roles of
        #{Mfa := {Role, any}} -> Role;
        #{Mfa := {Role, Pids}} ->
            case lists:member(Pid, Pids) of true -> Role; false -> none end;
        _ -> none
    end.

state_on_call(Mfa, Pid, Args, St) ->
    case state_role(Mfa, Pid, St) of
        none -> {none, St};
        Role ->
            Pending = St#st.pending,
            Old = old_state(Role, element(2, Mfa), Args, last_state(Pid, St)),
            {Role, St#st{pending = Pending#{Pid => [Old | maps:get(Pid, Pending, [])]}}}
    end.

state_on_return(Mfa, Pid, St) ->
    case state_role(Mfa, Pid, St) of
        none -> {none, unknown, St};
        Role ->
            Pending = St#st.pending,
            case maps:get(Pid, Pending, []) of
                [Old] -> {Role, Old, St#st{pending = maps:remove(Pid, Pending)}};
                [Old | Rest] -> {Role, Old, St#st{pending = Pending#{Pid := Rest}}};
                [] -> {Role, unknown, St}
            end
    end.

state_after_call(Role, Pid, Ts, Mfa, [Reason | _], Refs, St)
  when Role =:= gs_terminate; Role =:= sm_terminate ->
    Max = maps:get(max_term_bytes, St#st.limits),
    Shown = case erlang:external_size(Reason) > Max of
                true -> shrink(Reason, 4, 3);
                false -> Reason
            end,
    N = next_state_number(Pid, St),
    drop_state(Pid, state_record(Pid, Ts, Mfa, 0, {N, {terminate, Shown}}, Refs, St));
state_after_call(ge_terminate, Pid, Ts, {M, _, _} = Mfa, _, Refs, St) ->
    case last_state(Pid, St) of
        Handlers when is_map(Handlers), is_map_key(M, Handlers) ->
            emit_state(Pid, Ts, Mfa, maps:remove(M, Handlers), Refs, St);
        _ -> St
    end;
state_after_call(_, _, _, _, _, _, St) -> St.

state_on_result(none, _, _, _, _, _, _, St) -> St;
state_on_result(Role, _, _, _, _, _, _, St) when Role =:= gs_terminate; Role =:= sm_terminate;
                                                 Role =:= ge_terminate ->
    St;
state_on_result(Role, Old, Value, Pid, Ts, Mfa, Refs, St) ->
    case new_state(Role, Value, Old) of
        {ok, {_, '$unknown'}} -> St;
        {ok, New} when Role =:= ge_init; Role =:= ge_event; Role =:= ge_call;
                       Role =:= ge_code_change ->
            emit_state(Pid, Ts, Mfa, handler_state(element(1, Mfa), New, Pid, St), Refs, St);
        {ok, New} -> emit_state(Pid, Ts, Mfa, New, Refs, St);
        none -> state_unknown(Pid, Ts, Mfa, {unrecognised_return, Mfa}, Refs, St)
    end.

%% A gen_event manager runs several handlers, each with a state of its own: its
%% state is recorded as one map, handler module => handler state, of the handlers
%% read at the start or seen since. One numbering per process; a callback's delta is
%% its handler's entry.
handler_state(M, New, Pid, St) ->
    case last_state(Pid, St) of
        Handlers when is_map(Handlers) -> Handlers#{M => New};
        _ -> #{M => New}
    end.

%% From here the process's state is unknown, until a whole state comes.
state_unknown(Pid, Ts, Mfa, Why, Refs, St) ->
    N = next_state_number(Pid, St),
    St1 = keep_state(Pid, {N, unknown}, St),
    state_record(Pid, Ts, Mfa, 0, {N, {unavailable, Why}}, Refs, St1).

%% The state a callback was given is not shipped with its call: it is the last state
%% the relay knows of the process ('$unknown' when it knows none). A gen_statem's
%% state name is small and comes with the call.
last_state(Pid, St) ->
    case maps:get(Pid, St#st.states, none) of
        {_, _, Last, _} -> Last;
        _ -> '$unknown'
    end.

old_state(Role, _, _, Last) when Role =:= gs_call; Role =:= gs_noreply;
                                 Role =:= gs_hibernate; Role =:= gs_code_change;
                                 Role =:= gs_terminate; Role =:= ge_event;
                                 Role =:= ge_call; Role =:= ge_code_change;
                                 Role =:= ge_terminate -> Last;
old_state(sm_state, F, _, Last) -> {F, statem_data(Last)};
old_state(sm_event, _, [_, _, S, _], Last) -> {S, statem_data(Last)};
old_state(sm_code_change, _, [_, S, _, _], Last) -> {S, statem_data(Last)};
old_state(sm_terminate, _, [_, S, _], Last) -> {S, statem_data(Last)};
old_state(_, _, _, _) -> '$unknown'.

statem_data({_, D}) -> D;
statem_data(_) -> '$unknown'.

new_state(Init, {ok, S}, _) when Init =:= gs_init; Init =:= ge_init -> {ok, S};
new_state(Init, {ok, S, _}, _) when Init =:= gs_init; Init =:= ge_init -> {ok, S};
new_state(gs_init, {ok, S, _, _}, _) -> {ok, S};
new_state(R, {become, _, S}, _) when R =:= gs_init; R =:= gs_call; R =:= gs_noreply -> {ok, S};
new_state(R, {become, _, S, _}, _) when R =:= gs_init; R =:= gs_call; R =:= gs_noreply ->
    {ok, S};
new_state(gs_hibernate, {hibernate, S}, _) -> {ok, S};
new_state(gs_hibernate, {insomniate, S}, _) -> {ok, S};
new_state(ge_event, {ok, S}, _) -> {ok, S};
new_state(ge_event, {ok, S, hibernate}, _) -> {ok, S};
new_state(ge_call, {ok, _, S}, _) -> {ok, S};
new_state(ge_call, {ok, _, S, hibernate}, _) -> {ok, S};
new_state(gs_call, {reply, _, S}, _) -> {ok, S};
new_state(gs_call, {reply, _, S, _}, _) -> {ok, S};
new_state(gs_call, {stop, _, _, S}, _) -> {ok, S};
new_state(R, {noreply, S}, _) when R =:= gs_call; R =:= gs_noreply -> {ok, S};
new_state(R, {noreply, S, _}, _) when R =:= gs_call; R =:= gs_noreply -> {ok, S};
new_state(R, {stop, _, S}, _) when R =:= gs_call; R =:= gs_noreply -> {ok, S};
new_state(R, {ok, S}, _) when R =:= gs_code_change; R =:= ge_code_change -> {ok, S};
new_state(sm_init, {ok, S, D}, _) -> {ok, {S, D}};
new_state(sm_init, {ok, S, D, _}, _) -> {ok, {S, D}};
new_state(sm_code_change, {ok, S, D}, _) -> {ok, {S, D}};
new_state(R, Result, Old) when R =:= sm_state; R =:= sm_event -> statem_result(Result, Old);
new_state(_, _, _) -> none.

statem_result({next_state, S, D}, _) -> {ok, {S, D}};
statem_result({next_state, S, D, _}, _) -> {ok, {S, D}};
statem_result({Keep, D}, {S, _}) when Keep =:= keep_state; Keep =:= repeat_state -> {ok, {S, D}};
statem_result({Keep, D, _}, {S, _}) when Keep =:= keep_state; Keep =:= repeat_state ->
    {ok, {S, D}};
statem_result({stop, _, D}, {S, _}) -> {ok, {S, D}};
statem_result({stop_and_reply, _, _, D}, {S, _}) -> {ok, {S, D}};
statem_result(Same, Old = {_, _}) when Same =:= keep_state_and_data;
                                       Same =:= repeat_state_and_data -> {ok, Old};
statem_result({Same, _}, Old = {_, _}) when Same =:= keep_state_and_data;
                                            Same =:= repeat_state_and_data;
                                            Same =:= stop -> {ok, Old};
statem_result({stop_and_reply, _, _}, Old = {_, _}) -> {ok, Old};
statem_result(_, _) -> none.

strip_return(none, V) -> V;
strip_return(R, {ok, _}) when R =:= ge_init; R =:= ge_event -> {ok, '$state'};
strip_return(R, {ok, _, hibernate}) when R =:= ge_init; R =:= ge_event ->
    {ok, '$state', hibernate};
strip_return(ge_call, {ok, Reply, _}) -> {ok, Reply, '$state'};
strip_return(ge_call, {ok, Reply, _, hibernate}) -> {ok, Reply, '$state', hibernate};
strip_return(gs_init, {ok, _, T, B}) -> {ok, '$state', T, B};
strip_return(R, {become, M, _}) when R =:= gs_init; R =:= gs_call; R =:= gs_noreply ->
    {become, M, '$state'};
strip_return(R, {become, M, _, X}) when R =:= gs_init; R =:= gs_call; R =:= gs_noreply ->
    {become, M, '$state', X};
strip_return(gs_hibernate, {H, _}) -> {H, '$state'};
strip_return(R, {ok, _}) when R =:= gs_init; R =:= gs_code_change; R =:= ge_code_change ->
    {ok, '$state'};
strip_return(gs_init, {ok, _, X}) -> {ok, '$state', X};
strip_return(gs_call, {reply, Reply, _}) -> {reply, Reply, '$state'};
strip_return(gs_call, {reply, Reply, _, X}) -> {reply, Reply, '$state', X};
strip_return(gs_call, {stop, Why, Reply, _}) -> {stop, Why, Reply, '$state'};
strip_return(R, {noreply, _}) when R =:= gs_call; R =:= gs_noreply -> {noreply, '$state'};
strip_return(R, {noreply, _, X}) when R =:= gs_call; R =:= gs_noreply -> {noreply, '$state', X};
strip_return(R, {stop, Why, _}) when R =:= gs_call; R =:= gs_noreply -> {stop, Why, '$state'};
strip_return(R, {ok, S, _}) when R =:= sm_init; R =:= sm_code_change -> {ok, S, '$state'};
strip_return(sm_init, {ok, S, _, A}) -> {ok, S, '$state', A};
strip_return(R, V) when R =:= sm_state; R =:= sm_event ->
    case V of
        {next_state, S, _} -> {next_state, S, '$state'};
        {next_state, S, _, A} -> {next_state, S, '$state', A};
        {K, _} when K =:= keep_state; K =:= repeat_state -> {K, '$state'};
        {K, _, A} when K =:= keep_state; K =:= repeat_state -> {K, '$state', A};
        {stop, Why, _} -> {stop, Why, '$state'};
        {stop_and_reply, Why, Replies, _} -> {stop_and_reply, Why, Replies, '$state'};
        _ -> V
    end;
strip_return(_, V) -> V.

emit_state(Pid, Ts, Mfa, New, Refs, St = #st{states = States, limits = L}) ->
    case maps:get(Pid, States, none) of
        {N, Since, Last, Bytes} when Last =:= New ->
            state_record(Pid, Ts, Mfa, 0, {N + 1, same}, Refs,
                         St#st{states = States#{Pid := {N + 1, Since, Last, Bytes}}});
        {N, {Changes, Acc}, Last, Bytes} ->
            %% Whole again after state_keyframe_every changes; but a large state whose
            %% deltas are small goes whole only once they add up to half its size (or
            %% after 16 times as many changes), so it costs about twice its deltas.
            Every = map_get(state_keyframe_every, L),
            case Changes < Every orelse (Acc * 2 < Bytes andalso Changes < 16 * Every) of
                true ->
                    Delta = diff(Last, New),
                    Size = erlang:external_size(Delta),
                    %% Measured against the last whole state: sizing New itself would
                    %% walk all of it on every callback.
                    case Size < Bytes of
                        true ->
                            St1 = keep_state(Pid, {N + 1, {Changes + 1, Acc + Size}, New,
                                                   Bytes}, St),
                            state_record(Pid, Ts, Mfa, 0, {N + 1, {delta, Delta}}, Refs, St1);
                        false -> keyframe(Pid, Ts, Mfa, N + 1, key, New, Refs, St)
                    end;
                false -> keyframe(Pid, Ts, Mfa, N + 1, key, New, Refs, St)
            end;
        {N, unknown} -> keyframe(Pid, Ts, Mfa, N + 1, key, New, Refs, St);
        none -> keyframe(Pid, Ts, Mfa, 1, key, New, Refs, St)
    end.

keyframe(Pid, Ts, Mfa, N, Tag, State, Refs, St) ->
    Size = erlang:external_size(State),
    case Size =< map_get(max_state_bytes, St#st.limits) of
        true ->
            St1 = keep_state(Pid, {N, {0, 0}, State, Size}, St),
            state_record(Pid, Ts, Mfa, 16, {N, {Tag, State}}, Refs, St1);
        false ->
            St1 = keep_state(Pid, {N, unknown}, St),
            over_state_budget(Pid, state_record(Pid, Ts, Mfa, 0, {N, {too_large, Size}}, Refs,
                                                St1))
    end.

%% A state over max_state_bytes is not shipped again: the process's state callbacks
%% are closed by time only from here (a guarded clause of their patterns), so the VM
%% stops copying the state into their trace messages. At most 64 such processes.
over_state_budget(Pid, St = #st{big_states = Big}) when map_size(Big) < 64 ->
    apply_state(St#st{big_states = Big#{Pid => true}});
over_state_budget(_, St) -> St.

%% Keeps a process's last state within max_state_memory_mb; past it the process
%% keeps only its number, so its next state goes whole.
keep_state(Pid, Entry, St = #st{states = States, state_bytes = Total}) ->
    Freed = case maps:get(Pid, States, none) of
                {_, _, _, Old} -> Total - Old;
                _ -> Total
            end,
    Budget = case map_get(max_state_memory_mb, St#st.limits) of
                 infinity -> infinity;
                 Mb -> Mb * 1024 * 1024
             end,
    case Entry of
        {N, _, _, Bytes} when Budget =/= infinity, Freed + Bytes > Budget ->
            St#st{states = States#{Pid => {N, unknown}}, state_bytes = Freed};
        {_, _, _, Bytes} -> St#st{states = States#{Pid => Entry}, state_bytes = Freed + Bytes};
        _ -> St#st{states = States#{Pid => Entry}, state_bytes = Freed}
    end.

next_state_number(Pid, St) ->
    case maps:get(Pid, St#st.states, none) of
        none -> 1;
        Entry -> element(1, Entry) + 1
    end.

state_record(Pid, Ts, Mfa, Flags, Body, Refs, St) ->
    Payload = term_to_binary(Body),
    Size = byte_size(Payload),
    append(17, Flags, Pid, Ts, Mfa, 0, Payload, Size, Refs, St).

drop_state(Pid, St = #st{states = States}) ->
    case maps:take(Pid, States) of
        {{_, _, _, Bytes}, Rest} -> St#st{states = Rest, state_bytes = St#st.state_bytes - Bytes};
        {_, Rest} -> St#st{states = Rest};
        error -> St
    end.

%% Every process's next state goes whole (its number still counts on).
forget_states(St = #st{states = States}) when map_size(States) =:= 0 -> St;
forget_states(St) ->
    St#st{states = maps:map(fun(_, E) -> {element(1, E), unknown} end, St#st.states),
          state_bytes = 0}.

clear_states(St) ->
    St#st{states = #{}, state_bytes = 0, pending = #{}, state_roles = #{}, state_pids = #{},
          discovered = #{}, big_states = #{}}.

%% Processes that died without an exit event we saw (module traces do not trace
%% lifecycles) are forgotten every five seconds.
sweep_states(St = #st{checks = C}) when C rem 50 =/= 0 -> St#st{checks = C + 1};
sweep_states(St = #st{checks = C, states = States}) ->
    Dead = [P || P <- maps:keys(States), node(P) =:= node(), not is_process_alive(P)],
    St1 = lists:foldl(fun drop_state/2, St, Dead),
    Stacks = St1#st.stacks,
    Gone = [P || P <- maps:keys(Stacks), node(P) =:= node(), not is_process_alive(P)],
    St1#st{checks = C + 1, pending = maps:without(Dead, St1#st.pending),
           stacks = maps:without(Gone, Stacks)}.

diff(Old, New) when is_map(Old), is_map(New) ->
    {Changed, Added} =
        maps:fold(fun(K, V, {Acc, Add}) ->
                          case Old of
                              #{K := V} -> {Acc, Add};
                              #{K := OldV} -> {[{K, diff(OldV, V)} | Acc], Add};
                              _ -> {[{K, {v, V}} | Acc], Add + 1}
                          end
                  end, {[], 0}, New),
    Removed = case map_size(Old) + Added > map_size(New) of
                  true -> [K || K <- maps:keys(Old), not is_map_key(K, New)];
                  false -> []
              end,
    {m, Changed, Removed};
diff(Old, New) when is_tuple(Old), is_tuple(New), tuple_size(Old) =:= tuple_size(New),
                    tuple_size(Old) > 0 ->
    {t, tuple_diff(Old, New, tuple_size(New), [])};
diff(Old, New) when is_list(Old), is_list(New), Old =/= [], New =/= [] ->
    case {proper_length(Old), proper_length(New)} of
        {LO, LN} when is_integer(LO), is_integer(LN) -> list_diff(Old, New, LO, LN);
        _ -> {v, New}
    end;
diff(_, New) -> {v, New}.

tuple_diff(_, _, 0, Acc) -> Acc;
tuple_diff(Old, New, I, Acc) ->
    case {element(I, Old), element(I, New)} of
        {Same, Same} -> tuple_diff(Old, New, I - 1, Acc);
        {A, B} -> tuple_diff(Old, New, I - 1, [{I, diff(A, B)} | Acc])
    end.

proper_length(L) ->
    try length(L) catch error:badarg -> improper end.

list_diff(Old, New, LO, LN) ->
    case shifted(Old, New, LN, 1) of
        {ok, K} -> {w, lists:sublist(New, K), LN - K};
        none -> trimmed_diff(Old, New, LO, LN)
    end.

%% New is K new elements followed by the first LN - K elements of Old (a list that
%% got new heads and perhaps lost its tail, as bounded histories do), K =< 8.
shifted(_, _, LN, K) when K > 8; K >= LN -> none;
shifted(Old = [H | _], New, LN, K) ->
    case lists:nthtail(K, New) of
        Rest = [H | _] ->
            case common_prefix(Rest, Old, 0) =:= LN - K of
                true -> {ok, K};
                false -> shifted(Old, New, LN, K + 1)
            end;
        _ -> shifted(Old, New, LN, K + 1)
    end.

trimmed_diff(Old, New, LO, LN) ->
    Prefix = common_prefix(Old, New, 0),
    Suffix = common_suffix(lists:nthtail(Prefix, Old), lists:nthtail(Prefix, New),
                           LO - Prefix, LN - Prefix),
    OldMid = lists:sublist(lists:nthtail(Prefix, Old), LO - Prefix - Suffix),
    NewMid = lists:sublist(lists:nthtail(Prefix, New), LN - Prefix - Suffix),
    Middle = case length(OldMid) =:= length(NewMid) of
                 true -> {e, lists:zipwith(fun(A, B) when A =:= B -> same;
                                              (A, B) -> diff(A, B) end, OldMid, NewMid)};
                 false -> {v, NewMid}
             end,
    {l, Prefix, Suffix, Middle}.

common_prefix([X | A], [X | B], N) -> common_prefix(A, B, N + 1);
common_prefix(_, _, N) -> N.

%% The length of the longest common tail of A and B (of lengths LA and LB).
common_suffix(A, B, LA, LB) when LA > LB -> common_suffix(lists:nthtail(LA - LB, A), B, LB, LB);
common_suffix(A, B, LA, LB) when LB > LA -> common_suffix(A, lists:nthtail(LB - LA, B), LA, LA);
common_suffix(A, B, L, L) -> run_of_equal(A, B, L, 0).

%% Counts the trailing run of pairwise-equal elements.
run_of_equal([], [], _, Run) -> Run;
run_of_equal([X | A], [X | B], L, Run) -> run_of_equal(A, B, L, Run + 1);
run_of_equal([_ | A], [_ | B], L, _) -> run_of_equal(A, B, L, 0).

%% Initial states: read with sys:get_state/2 from short-lived processes, so a busy
%% process costs the relay nothing; a process that is not an OTP process is never
%% sent a system message (it would stay in its mailbox).
probe_states(TRef, #{state_probe := {not_otp, Pids}}, St) ->
    Now = erlang:monotonic_time(nanosecond),
    lists:foldl(fun(P, Acc) -> on_state_probe(TRef, P, Now, {unavailable, not_otp}, Acc) end,
                St, Pids);
probe_states(TRef, #{state_probe := {M, Scope}}, St) ->
    Relay = self(),
    Timeout = map_get(state_probe_timeout_ms, St#st.limits),
    spawn(fun() ->
                  Pids = case Scope of
                             any -> processes_of(M, 1000);
                             _ -> Scope
                         end,
                  [spawn(fun() -> probe(Relay, TRef, P, Timeout) end) || P <- Pids]
          end),
    St;
probe_states(_, _, St) -> St.

%% A process is asked for its state only while it waits in its behaviour's receive
%% loop with nothing queued: a busy process, or one blocked in a call of its own, is
%% left alone and its state stays unknown until its next callback returns one.
probe(Relay, TRef, Pid, Timeout) ->
    Relay ! {es_own, self()},
    Result = case idle(Pid) of
                 false -> {unavailable, busy};
                 Loop ->
                     try sys:get_state(Pid, Timeout) of
                         State -> probed(Loop, State)
                     catch
                         exit:{timeout, _} -> {unavailable, timeout};
                         exit:{noproc, _} -> {unavailable, noproc};
                         _:_ -> {unavailable, not_otp}
                     end
             end,
    Relay ! {es_state_probe, TRef, Pid, erlang:monotonic_time(nanosecond), Result, self()}.

%% The behaviour whose loop the process waits in, or false.
idle(Pid) ->
    case erlang:process_info(Pid, [status, message_queue_len, current_function]) of
        [{status, waiting}, {message_queue_len, 0}, {current_function, {M, _, _}}] ->
            lists:member(M, [gen_server, gen_statem, gen_event, gen_server2, p1_server])
                andalso M;
        _ -> false
    end.

%% gen_server2 has no system_get_state: sys:get_state gives its whole loop state,
%% #gs2_state{parent, name, state, mod, ...}, of which the callback state is the third
%% field and the module it runs now the fourth.
probed(gen_server2, S) when is_tuple(S), tuple_size(S) >= 5, element(1, S) =:= gs2_state,
                           is_atom(element(5, S)) ->
    {ok, element(4, S), [element(5, S)]};
%% A gen_event manager's is its handlers, [{Module, Id, State}]: recorded as a map,
%% module => state (see handler_state/4).
probed(gen_event, S) when is_list(S) ->
    case lists:all(fun(H) -> is_tuple(H) andalso tuple_size(H) =:= 3
                                 andalso is_atom(element(1, H)) end, S) of
        true -> {ok, maps:from_list([{Mod, HS} || {Mod, _, HS} <- S]),
                 [Mod || {Mod, _, _} <- S]};
        false -> {ok, S}
    end;
probed(_, S) -> {ok, S}.

%% At most Max processes started as M (gen_server or gen_statem callback module).
processes_of(M, Max) ->
    Of = fun(P) -> case erlang:process_info(P, dictionary) of
                       {dictionary, D} ->
                           case proplists:get_value('$initial_call', D) of
                               {M, init, 1} -> true;
                               _ -> false
                           end;
                       _ -> false
                   end
         end,
    lists:sublist([P || P <- erlang:processes(), Of(P)], Max).

%% A state read counts only where no callback has told us the state since.
on_state_probe(TRef, Pid, Ts, Result, St) ->
    Known = case maps:get(Pid, St#st.states, none) of
                none -> false;
                {_, unknown} -> false;
                _ -> true
            end,
    case {maps:is_key(TRef, St#st.traces), St#st.tripped, Known} of
        {true, false, false} ->
            N = next_state_number(Pid, St),
            case Result of
                {ok, State} -> keyframe(Pid, Ts, none, N, initial, State, [TRef], St);
                {unavailable, Why} ->
                    state_record(Pid, Ts, none, 0, {N, {unavailable, Why}}, [TRef],
                                 St#st{states = (St#st.states)#{Pid => {N, unknown}}})
            end;
        _ -> St
    end.

%% ---------------------------------------------------------------------------------
%% Limits and the circuit breaker

check_limits(St = #st{tripped = Tripped}) when Tripped =/= false -> notify_stop(St);
check_limits(St0) ->
    Now = erlang:monotonic_time(millisecond),
    St = adapt(Now, St0),
    L = St#st.limits,
    {message_queue_len, Queue} = process_info(self(), message_queue_len),
    Checks = [
        {max_duration_s, fun(Max) -> (Now - St#st.started_at) >= Max * 1000 end},
        {max_events, fun(Max) -> St#st.kept - St#st.kept_base >= Max end},
        {max_queue_len, fun(Max) -> Queue >= Max end},
        %% Sampling at its floor for a second and still over the rate: the relay is
        %% not draining a backlog from before the VM sampled (that clears within it).
        {max_events_per_second,
         fun(Max) -> St#st.window_rate > Max andalso is_integer(St#st.floor_since)
                         andalso Now - St#st.floor_since >= 1000 end},
        {max_node_memory_mb, fun(Max) -> erlang:memory(total) >= Max * 1024 * 1024 end},
        {max_cpu_percent, fun(Max) -> cpu_percent() >= Max end}
    ],
    case [Name || {Name, Over} <- Checks, is_number(maps:get(Name, L)),
                  Over(maps:get(Name, L))] of
        [] -> St;
        [Reason | _] -> trip(Reason, St)
    end.

cpu_percent() ->
    case whereis(cpu_sup) of
        undefined -> 0;
        _ -> try apply(cpu_sup, util, []) of
                 U when is_number(U) -> U;
                 _ -> 0
             catch _:_ -> 0
             end
    end.

%% Adaptive sampling, once per rate window (a quarter of a second): when the kept rate
%% passes 80% of the limit, the kept share drops at once to what brings it to 60% (a
%% flood is met within one window, not after a second of halvings); below 40% it
%% rises towards that, by half at most.
adapt(Now, St) when Now - St#st.window_start < 250 -> St;
adapt(Now, St) ->
    Elapsed = max(1, Now - St#st.window_start),
    Rate = St#st.window_kept * 1000 div Elapsed,
    L = St#st.limits,
    Adaptive = case maps:get(max_events_per_second, L) of
                   infinity -> 1.0;
                   Max when Rate > Max * 0.8 ->
                       max(map_get(min_sample_rate, L),
                           min(St#st.adaptive / 2, St#st.adaptive * Max * 0.6 / Rate));
                   Max when Rate < Max * 0.4 ->
                       min(1.0, St#st.adaptive * min(1.5, Max * 0.6 / max(1, Rate)));
                   _ -> St#st.adaptive
               end,
    Floor = case Adaptive =< map_get(min_sample_rate, L) of
                true when St#st.floor_since =:= undefined -> Now;
                true -> St#st.floor_since;
                false -> undefined
            end,
    %% Shedding and sampling in the VM change patterns: applied together, once, since
    %% under a flood each change waits for every scheduler to pass a code barrier.
    {Shed, St1} = shed_hottest(St#st{window_start = Now, window_kept = 0, window_rate = Rate,
                                     adaptive = Adaptive, floor_since = Floor}),
    {Sampled, St2} = duty_cycle(St1),
    case Shed orelse Sampled of
        true -> apply_state(St2);
        false -> St2
    end.

%% Sampling in the relay saves the recorder, not the node: each call still costs its
%% process a trace message and the relay a receive. From the first window over the
%% rate, the traced functions sample in the VM instead: their patterns take a guard
%% on one bit of the node's trace control word, which the watcher sets for the kept
%% share of every 100 ms and clears for the rest. A call made while the bit is clear
%% costs a failed guard and sends nothing; a call made while it is set is traced with
%% its return, so spans stay whole, though calls inside one may fall in a gap.
%% Callbacks whose state is captured stay out of it (every transition counts), and
%% so does the wait pattern.
duty_cycle(St = #st{adaptive = A, duty = false}) when A >= 1.0 -> {false, St};
duty_cycle(St = #st{duty = false}) ->
    Bit = duty_bit(),
    Eligible = [Mfa || Mfa <- maps:keys(St#st.applied_patterns),
                       not maps:is_key(Mfa, St#st.state_roles), Mfa =/= {gen, call, 4}],
    Adapt = lists:foldl(fun(Mfa, Acc) -> Acc#{Mfa => (maps:get(Mfa, Acc, #{}))#{duty => Bit}}
                        end, St#st.adapt, Eligible),
    set_duty_bit(Bit, true),
    St#st.watcher ! {duty, St#st.adaptive, Bit},
    {true, St#st{duty = Bit, adapt = Adapt}};
duty_cycle(St = #st{duty = Bit}) ->
    St#st.watcher ! {duty, St#st.adaptive, Bit},
    {false, St}.

%% The bit of the node's trace control word this session's sampled patterns test:
%% one of bits 16 to 27, picked at random, so that sessions side by side rarely share
%% one (the watcher of each sets its own back every 100 ms while it keeps all). The
%% session clears its bit when it ends; other bits are never touched.
duty_bit() -> 1 bsl (16 + rand:uniform(12) - 1).

set_duty_bit(undefined, _) -> ok;
set_duty_bit(Bit, On) ->
    Word = erlang:system_info(trace_control_word),
    erlang:system_flag(trace_control_word,
                       case On of
                           true -> Word bor Bit;
                           false -> Word band bnot Bit
                       end).

%% Sampling keeps the relay within its rate, but every call still costs the traced
%% process its trace message. While sampling keeps half or less, once a second, each
%% hot leaf leaves the trace: a function that makes a tenth or more of the calls
%% (counted on one call in 16) and has never been seen making a traced call. That is
%% a helper (a path check, a name lookup) called once or more per request, from
%% traced code or not; the functions that call other traced functions (a request
%% handler, a loop, whatever a request passes through) keep their spans, so each
%% request keeps its outline and its duration. Behaviour callbacks, and functions
%% whose state is captured, never leave: they are what the recording is about.
%% list_traces says which functions left and when (narrowed); such a function can
%% still be traced on its own.
count_heat(Pid, Mfa, St = #st{adaptive = A}) when A < 1.0 ->
    %% One call in 16, at random: a fixed stride could keep missing one function of a
    %% loop whose length is a multiple of it.
    case rand:uniform(16) of
        1 ->
            Heat = maps:update_with(Mfa, fun(N) -> N + 1 end, 1, St#st.heat),
            %% The innermost open traced call made this one: it is no leaf.
            case maps:get(Pid, St#st.stacks, []) of
                [{Caller, _, _} | _] when Caller =/= Mfa ->
                    St#st{heat = Heat, parents = (St#st.parents)#{Caller => true}};
                _ -> St#st{heat = Heat}
            end;
        _ -> St
    end;
count_heat(_, _, St) -> St.

shed_hottest(St = #st{heat = Heat}) when map_size(Heat) =:= 0 -> {false, St};
shed_hottest(St = #st{adaptive = A}) when A > 0.5 -> {false, St#st{heat = #{}}};
shed_hottest(St = #st{heat = Heat, parents = Parents}) ->
    All = lists:sum(maps:values(Heat)),
    Hot = [Mfa || {Mfa, Calls} <- maps:to_list(Heat), Calls * 10 >= All,
                  not maps:is_key(Mfa, Parents), not maps:is_key(Mfa, St#st.state_roles),
                  has_pattern(Mfa, St), not is_callback(Mfa)],
    Now = erlang:system_time(millisecond),
    Adapt = lists:foldl(fun(Mfa, Acc) -> Acc#{Mfa => (maps:get(Mfa, Acc, #{}))#{shed => Now}}
                        end, St#st.adapt, Hot),
    {Hot =/= [], St#st{heat = #{}, adapt = Adapt}}.

%% A callback of a behaviour its module declares (gen_server's handle_call/3,
%% xmpp_stream_in's handle_recv/3, ...).
is_callback({M, F, A}) ->
    lists:any(fun(B) ->
                      Callbacks = try B:behaviour_info(callbacks) catch _:_ -> [] end,
                      is_list(Callbacks) andalso lists:member({F, A}, Callbacks)
              end, try declared_behaviours(M) catch _:_ -> [] end).

%% Removing the tracing comes first: it stops new trace messages; the batch in
%% hand is sent after.
trip(Reason, St0) ->
    %% Flags off first (no new trace messages), then what was captured goes out and
    %% the owner is told; the patterns, slower to remove under load, go last.
    St1 = remove_flags(St0),
    St = flush(St1#st{applied_flags = #{}}),
    St2 = notify_stop((mark_tripped(Reason, St))#st{stop_notice = {es_stopped, Reason,
                                                                    counters(St)}}),
    remove_all(St2).

mark_tripped(Reason, St) ->
    Traces = maps:map(fun(_, T) -> T#{status => {tripped, Reason}} end, St#st.traces),
    St#st{tripped = Reason, traces = Traces}.

%% The stop notice must reach Python, but the relay must not wait on a busy
%% distribution buffer either: it is sent with nosuspend and retried on each check.
notify_stop(St = #st{stop_notice = undefined}) -> St;
notify_stop(St = #st{stop_notice = Notice}) ->
    case erlang:send(St#st.owner, Notice, [nosuspend]) of
        ok -> St#st{stop_notice = undefined};
        _ -> St
    end.

counters(St) ->
    #{received => St#st.received, kept => St#st.kept, dropped => St#st.dropped,
      sampled_out => St#st.sampled_out, truncated => St#st.truncated,
      discarded => St#st.discarded,
      adaptive_rate => St#st.adaptive, rate => St#st.window_rate, batches => St#st.seq}.

%% ---------------------------------------------------------------------------------
%% Requests

handle_request({trace, TRef, Spec = #{kind := framework}}, St) ->
    case framework_spec(Spec) of
        {error, _} = E -> {E, St};
        {ok, T} ->
            case add_trace(TRef, T, St) of
                {ok, St1} -> attach_framework(TRef, T, St1);
                Other -> Other
            end
    end;
handle_request({trace, TRef, Spec = #{kind := Kind}}, St) ->
    case trace_spec(Kind, Spec) of
        {error, _} = E -> {E, St};
        {ok, T} ->
            Others = case maps:get(force, Spec, false) of
                         true -> [];
                         false -> others_tracing(T, St)
                     end,
            case Others of
                [] ->
                    {Reply, St1} = within_deadline(TRef, maps:get(deadline_ms, Spec, infinity),
                                                   fun() -> add_trace(TRef, T, St) end),
                    case {Reply, maps:get(duration_ms, Spec, undefined)} of
                        {ok, Ms} when is_integer(Ms) ->
                            erlang:send_after(Ms, self(), {stop_trace_after, TRef});
                        _ -> ok
                    end,
                    {Reply, St1};
                _ -> {{error, {traced_by_others, Others}}, St}
            end
    end;
handle_request({stop_trace, TRef}, St) ->
    case maps:take(TRef, St#st.traces) of
        error -> {{error, unknown_trace}, St};
        {T, Rest} ->
            St1 = drop_members(TRef, flush(detach_framework([TRef], St))),
            St2 = apply_state(St1#st{traces = Rest,
                                     routes_version = St1#st.routes_version + 1}),
            {{ok, summary(TRef, T#{status => stopped})}, St2}
    end;
handle_request(list_traces, St) ->
    {[(summary(R, T))#{narrowed => narrowed(T, St#st.adapt)}
      || {R, T} <- maps:to_list(St#st.traces)], St};
handle_request({set_limits, New}, St) ->
    Limits = limits(New, St#st.limits),
    set_heap_limit(Limits),
    St#st.watcher ! {limits, Limits},
    {{ok, Limits}, St#st{limits = Limits}};
handle_request({metrics, off}, St) ->
    {ok, St#st{metrics = off}};
handle_request({metrics, #{top := Top, every_ms := Every}}, St)
  when is_integer(Top), Top >= 0, is_integer(Every), Every >= 100 ->
    %% Monotonic time may be negative: the first sample is due at once.
    Due = erlang:monotonic_time(millisecond) - Every,
    {ok, St#st{metrics = #{top => Top, every => Every, last => Due, reds => #{},
                           scanned => Due, ranked => []}}};
handle_request(emergency_stop, St0) ->
    St = remove_all(flush(St0)),
    Stopped = [summary(R, T#{status => stopped}) || {R, T} <- maps:to_list(St#st.traces)],
    {{ok, Stopped}, clear_states(St#st{traces = #{},
                                       routes_version = St#st.routes_version + 1})};
handle_request(reset_breaker, St) ->
    %% A new start: the event and duration limits count from here.
    St#st.watcher ! rearm,
    {ok, clear_states(St#st{tripped = false, traces = #{}, adaptive = 1.0, heat = #{},
                            parents = #{}, floor_since = undefined, kept_base = St#st.kept,
                            routes_version = St#st.routes_version + 1,
                            started_at = erlang:monotonic_time(millisecond)})};
handle_request(status, St) ->
    {#{counters => counters(St), limits => St#st.limits, tripped => St#st.tripped,
       patterns => maps:size(St#st.applied_patterns),
       flags => St#st.applied_flags}, St};
handle_request(flush, St) ->
    {ok, flush(St)};
handle_request(state_keyframes, St) ->
    %% A recording that starts now gets whole states first, read anew where no
    %% callback runs soon.
    %% What is buffered goes first, before the reply: it belongs before the recording.
    %% The traced processes' mailboxes too: a recording that starts after their traces
    %% did needs the backlog it starts with to pair callbacks with their messages.
    St1 = maps:fold(fun(_, T = #{kind := process, pid := P}, Acc) when is_pid(P) ->
                            in_flight([P], counts_backlog(T), Acc);
                       (_, _, Acc) -> Acc
                    end, forget_states(flush(St)), St#st.traces),
    {ok, maps:fold(fun probe_states/3, St1, St#st.traces)};
handle_request(shutdown, St) ->
    St1 = remove_all(flush(St)),
    self() ! {'DOWN', St1#st.owner_mon, process, St1#st.owner, shutdown},
    {ok, St1};
handle_request(Other, St) ->
    {{error, {unknown_request, Other}}, St}.

%% A module trace sees local calls too (a call from inside the module, without the
%% module's name) unless calls => global asks for fully qualified calls only: cheaper
%% where most calls are local, since those never reach a breakpoint.
trace_spec(module, Spec = #{module := M, level := Level, only := Only, exclude := Exclude,
                           rate := Rate}) ->
    case {module_functions(M, Level), maps:get(state, Spec, false)} of
        {{error, _} = E, _} -> E;
        {{ok, All}, WantState} ->
            Fs = select(All, Only, Exclude),
            Where = case maps:get(calls, Spec, local) of global -> global; _ -> local end,
            Clauses = level_capture(Level),
            States = state_positions(M, Fs),
            T = #{kind => module, module => M, functions => Fs, level => Level,
                  rate => float(Rate), want_args => true, calls => Where,
                  patterns => [{{M, F, A}, Where,
                                with_elided(Clauses, maps:get({F, A}, States, []))}
                               || {F, A} <- Fs] ++ [W || Level =/= basic, W <- waits()],
                  flags => #{all => [call]}},
            case WantState of
                false -> {ok, T};
                true ->
                    case state_engine(M) of
                        none -> {error, {no_state_callbacks, M}};
                        Engine -> {ok, with_state(T, Engine, any)}
                    end
            end
    end;
trace_spec(function, Spec = #{module := M, function := F, arity := A, capture := Capture,
                              match := Match, rate := Rate}) ->
    Level = maps:get(level, Spec, undefined),
    case {function_arities(M, F, A), Match} of
        {{error, _} = E, _} -> E;
        {_, Ms} when Ms =/= undefined, not is_list(Ms) -> {error, {bad_match_spec, Ms}};
        {{ok, Arities}, _} ->
            Capturing = case Match of
                            undefined -> function_capture(Level, Capture);
                            _ -> {match, user_ms(Match)}
                        end,
            {ok, #{kind => function, module => M, function => F, arity => A,
                   rate => float(Rate),
                   want_args => Level =/= undefined orelse lists:member(args, Capture),
                   patterns => [{{M, F, Ar}, local, Capturing} || Ar <- Arities],
                   flags => #{all => [call]}}}
    end;
trace_spec(process, Spec = #{target := Target, include := Include, children := Children,
                             rate := Rate}) ->
    case resolve_pid(Target) of
        {error, _} = E -> E;
        {ok, Pid} ->
            %% Children already alive are traced too (include_children): the
            %% processes whose parent is Pid, and theirs, at most 10,000.
            Existing = case Children of
                           true -> descendants([Pid], 10000, []);
                           false -> []
                       end,
            Calls = lists:member(calls, Include),
            State = lists:member(state, Include),
            Flags = lists:usort(lists:append([include_flags(I) || I <- Include]) ++
                                [set_on_spawn || Children]),
            %% Calls of one process: a pattern on every function, guarded to let only
            %% this process through, since other traces may have set the call flag
            %% on every process. Children are not in the guard: their calls show
            %% only where another trace covers the function. The system messages the
            %% process handles (sys, and the engine's system_* callbacks, which loop
            %% back into the server and never return) are left out. State capture
            %% uses the same pattern to see which callback module the process runs.
            Patterns = case Calls orelse State of
                           true -> [{{'_', '_', '_'}, global,
                                     [capture([{'=:=', {self}, Pid}], value, false)]}
                                    | system_exclusions() ++ waits()];
                           false -> []
                       end,
            T = #{kind => process, pid => Pid, rate => 1.0, want_args => true,
                  children => Children, child_rate => float(Rate), include => Include,
                  calls => Calls, patterns => Patterns, spec => Spec,
                  name => if is_atom(Target) -> Target; true -> undefined end,
                  existing_children => Existing,
                  flags => maps:from_list([{P, Flags} || P <- [Pid | Existing]])},
            case {State, process_behaviour(Pid)} of
                {false, _} -> {ok, T};
                {true, none} -> {ok, T#{state_probe => {not_otp, [Pid]}}};
                {true, Engine} -> {ok, with_state(T, Engine, Pid)}
            end
    end;
trace_spec(Kind, _) ->
    {error, {bad_trace_spec, Kind}}.

%% Tracers other than us on what this trace would touch.
%% While a pattern of ours covers every function, any function looks traced: the
%% functions were checked when that pattern went on.
others_tracing(T, St) ->
    Mine = St#st.applied_patterns,
    Pids = [P || P <- maps:keys(maps:get(flags, T)), is_pid(P)],
    Mfas = [Mfa || not maps:is_key({'_', '_', '_'}, Mine),
                   {Mfa = {_, F, A}, _, Capturing} <- maps:get(patterns, T), Capturing =/= off,
                   is_atom(F), F =/= '_', is_integer(A), not maps:is_key(Mfa, Mine)],
    conflicts([{process, P} || P <- Pids] ++ [{function, M} || M <- Mfas]).

add_trace(_TRef, _T, St = #st{tripped = Tripped}) when Tripped =/= false ->
    {{error, {tripped, Tripped}}, St};
add_trace(TRef, T, St) ->
    Now = erlang:system_time(millisecond),
    T1 = T#{status => running, started_at => Now, captured => 0, dropped => 0,
            sampled_out => 0},
    Traced = case T of
                 #{kind := process, pid := Root} -> [Root | maps:get(existing_children, T, [])];
                 _ -> []
             end,
    Members = maps:merge(St#st.members, maps:from_list([{P, TRef} || P <- Traced])),
    St1 = St#st{traces = (St#st.traces)#{TRef => T1}, members = Members,
                routes_version = St#st.routes_version + 1},
    St2 = apply_state(St1),
    {ok, probe_states(TRef, T1, in_flight(Traced, counts_backlog(T), St2))}.

counts_backlog(#{include := Include}) -> lists:member(messages, Include);
counts_backlog(_) -> false.

%% What each traced process already had when tracing switched on: its mailbox (a
%% backlog has no receive events: those messages arrived before), and what it was
%% doing. Record kind 18, after the flags are on. With Count, the queued messages are
%% counted by kind (call, cast, system, reply, info), so each callback can be paired
%% with the message it served; only for a queue of at most 10,000 messages in at most
%% 64 MB, since counting copies the queue into the relay (else backlog => unknown).
%% These records count toward no trace's captured events: they are what was there.
in_flight(Pids, Count, St) ->
    Ts = erlang:monotonic_time(nanosecond),
    lists:foldl(
      fun(P, Acc) ->
              Items = [message_queue_len, current_function, status, memory],
              case erlang:process_info(P, Items) of
                  [{message_queue_len, Len}, {current_function, Fn}, {status, Status},
                   {memory, Bytes}] ->
                      Backlog = case Count of
                                    true -> backlog(P, Len, Bytes);
                                    false -> unknown
                                end,
                      record(18, 0, P, Ts, none, 0,
                             (waiting_on(P, Fn))#{message_queue_len => Len,
                                                  current_function => Fn, status => Status,
                                                  backlog => Backlog}, [], Acc);
                  _ -> Acc
              end
      end, St, Pids).

%% A process waiting for the reply to a call monitors the process it called: the
%% waits-for edge of a call that began before the recording.
waiting_on(P, {gen, do_call, 4}) ->
    case erlang:process_info(P, [monitors, current_stacktrace]) of
        [{monitors, Monitors}, {current_stacktrace, Stack}] ->
            #{waiting_on => [Pid || {process, Pid} <- Monitors, is_pid(Pid)],
              stack => [{M, F, A} || {M, F, A, _} <- lists:sublist(Stack, 8)]};
        _ -> #{}
    end;
waiting_on(_, _) -> #{}.

backlog(_, 0, _) -> #{call => 0, cast => 0, system => 0, reply => 0, info => 0};
backlog(P, Len, Bytes) when Len =< 10000, Bytes =< 64 * 1024 * 1024 ->
    case erlang:process_info(P, messages) of
        {messages, Messages} ->
            lists:foldl(fun(M, Acc) -> maps:update_with(message_kind(M), fun(N) -> N + 1 end, Acc)
                        end, backlog(P, 0, 0), Messages);
        _ -> unknown
    end;
backlog(_, _, _) -> unknown.

message_kind({'$gen_call', _, _}) -> call;
message_kind({'$gen_cast', _}) -> cast;
message_kind({system, _, _}) -> system;
message_kind({Ref, _}) when is_reference(Ref) -> reply;
message_kind({[alias | Ref], _}) when is_reference(Ref) -> reply;
message_kind(_) -> info.

%% Process metrics, at most every `every` ms on the 100 ms check: for the traced
%% processes and the top N of the node by mailbox, by memory and by reductions since
%% the last sample, one kind-19 record each: message_queue_len, memory, reductions,
%% status, current function, registered name. Finding the top N reads three numbers
%% of every process (one process_info call each, about a microsecond: a millisecond
%% per sample for 1,000 processes), so the node is ranked anew every fifth sample, and
%% at most every process_count / 20 ms (every 5 s with 100,000 processes); the last
%% top N is sampled in between. The reductions of the last scan are kept to
%% rank by what each process did since, for at most 100,000 processes (past that,
%% by the total). The records count toward no limit: they are the session's own.
sample_metrics(St = #st{metrics = off}) -> St;
sample_metrics(St = #st{tripped = true}) -> St;
sample_metrics(St = #st{metrics = M = #{top := Top, every := Every, last := Last}}) ->
    Now = erlang:monotonic_time(millisecond),
    case Now - Last >= Every of
        false -> St;
        true ->
            Ts = erlang:monotonic_time(nanosecond),
            Own = own_processes(St),
            Scan = max(5 * Every, erlang:system_info(process_count) div 20),
            {Ranked, Reds, Scanned} =
                case Now - maps:get(scanned, M) >= Scan of
                    true ->
                        {R0, Reds0} = top_processes(Top, Own, maps:get(reds, M)),
                        {R0, Reds0, Now};
                    false ->
                        {maps:get(ranked, M), maps:get(reds, M), maps:get(scanned, M)}
                end,
            Pids = lists:usort([P || P <- metric_targets(St), not maps:is_key(P, Own)]
                               ++ Ranked),
            Before = St#st.kept,
            St1 = lists:foldl(fun(P, Acc) -> metric_record(P, Ts, Acc) end, St, Pids),
            N = St1#st.kept - Before,
            St1#st{metrics = M#{last := Now, reds := Reds, ranked := Ranked,
                                scanned := Scanned},
                   kept_base = St1#st.kept_base + N,
                   window_kept = St1#st.window_kept - N}
    end.

own_processes(St) ->
    maps:from_list([{P, true} || P <- [self(), St#st.watcher | maps:keys(St#st.own)],
                                 is_pid(P)]).

%% The traced processes: the targets of process traces and the processes whose state
%% is captured.
metric_targets(St) ->
    Traced = [P || #{pid := P} <- maps:values(St#st.traces), is_pid(P)],
    Traced ++ [P || P <- maps:keys(St#st.state_pids), is_pid(P)].

top_processes(0, _, _) -> {[], #{}};
top_processes(Top, Own, Previous) ->
    Keep = erlang:system_info(process_count) =< 100000,
    {Rows, Reds} = lists:foldl(
                     fun(P, {Rows0, Reds0} = Acc) ->
                             case maps:is_key(P, Own) of
                                 true -> Acc;
                                 false ->
                                     case erlang:process_info(P, [message_queue_len, memory,
                                                                  reductions]) of
                                         [{_, Q}, {_, Mem}, {_, R}] ->
                                             Did = R - maps:get(P, Previous, R),
                                             Reds1 = if Keep -> Reds0#{P => R};
                                                        true -> Reds0
                                                     end,
                                             {[{P, Q, Mem, Did} | Rows0], Reds1};
                                         _ -> Acc
                                     end
                             end
                     end, {[], #{}}, erlang:processes()),
    Best = fun(Key) ->
                   Sorted = lists:reverse(lists:keysort(Key, Rows)),
                   [element(1, Row) || Row <- lists:sublist(Sorted, Top), element(Key, Row) > 0]
           end,
    {lists:usort(Best(2) ++ Best(3) ++ Best(4)), Reds}.

metric_record(P, Ts, St) ->
    Items = [message_queue_len, memory, reductions, status, current_function,
             registered_name],
    case erlang:process_info(P, Items) of
        [{_, Q}, {_, Mem}, {_, R}, {_, Status}, {_, Fn}, {_, Name}] ->
            record(19, 0, P, Ts, none, 0,
                   #{q => Q, m => Mem, r => R, s => Status, f => Fn,
                     n => case Name of [] -> undefined; _ -> Name end}, [], St);
        _ -> St
    end.

%% A process trace given a registered name follows the name: when another process
%% holds it (a supervisor restarted the first), that one is traced from then on, and
%% a register record names it in the recording.
follow_names(St = #st{tripped = false, traces = Traces}) ->
    maps:fold(
      fun(TRef, #{kind := process, pid := Old, spec := Spec = #{target := Name}}, Acc)
            when is_atom(Name) ->
              case whereis(Name) of
                  New when is_pid(New), New =/= Old -> retarget(TRef, Spec, New, Name, Acc);
                  _ -> Acc
              end;
         (_, _, Acc) -> Acc
      end, St, Traces);
follow_names(St) -> St.

retarget(TRef, Spec, New, Name, St) ->
    case trace_spec(process, Spec) of
        {ok, T} ->
            #{TRef := Old} = St#st.traces,
            Kept = maps:with([status, started_at, captured, dropped, sampled_out], Old),
            Members = maps:remove(maps:get(pid, Old), St#st.members),
            St1 = apply_state(St#st{traces = (St#st.traces)#{TRef := maps:merge(T, Kept)},
                                    members = Members#{New => TRef},
                                    routes_version = St#st.routes_version + 1}),
            Ts = erlang:monotonic_time(nanosecond),
            St2 = record(14, 0, New, Ts, none, 0, Name, [TRef], St1),
            probe_states(TRef, T, in_flight([New], counts_backlog(T), St2));
        {error, _} -> St
    end.

%% Setting patterns and flags waits for every scheduler each time; on a busy node
%% that can take long. A start that took longer than its deadline is undone, all of
%% it, and answered as timed out: the caller then knows nothing of it stays.
within_deadline(_, infinity, Start) -> Start();
within_deadline(TRef, Ms, Start) ->
    Began = erlang:monotonic_time(microsecond),
    case Start() of
        {ok, St} ->
            Took = erlang:monotonic_time(microsecond) - Began,
            case Took > Ms * 1000 of
                false -> {ok, St};
                true ->
                    {_, Undone} = handle_request({stop_trace, TRef}, St),
                    {{error, {setup_timeout, Took div 1000}}, Undone}
            end;
        Other -> Other
    end.

%% Untraces the adopted children of a stopped process trace (the root's flags go
%% with apply_state).
drop_members(TRef, St) ->
    {Gone, Kept} = lists:partition(fun({_, {rejected, R}}) -> R =:= TRef;
                                      ({_, R}) -> R =:= TRef end,
                                   maps:to_list(St#st.members)),
    Roots = [P || #{kind := process, pid := P} <- maps:values(St#st.traces)],
    [catch tr_process(St#st.session, P, false, [all]) || {P, _} <- Gone,
                                                         not lists:member(P, Roots)],
    St#st{members = maps:from_list(Kept)}.

%% The functions of a trace whose calls ship less than the trace asked for, and
%% what they leave out: [{Mfa, ElidedPositions, ValuesRecorded, LeftAt}], LeftAt
%% being when a function called too often left the trace (system time, ms), or none.
narrowed(T, Adapt) ->
    [{Mfa, [P || {P, _} <- maps:get(elide, A, [])], not maps:get(timed, A, false),
      maps:get(shed, A, none)}
     || {{M, F, Ar} = Mfa, A} <- lists:sort(maps:to_list(Adapt)), covers(T, M, F, Ar),
        maps:size(maps:remove(duty, A)) > 0].

summary(TRef, T) ->
    maps:with([ref, kind, module, function, arity, pid, name, level, rate, child_rate, status,
               started_at, children, include, captured, dropped, sampled_out, state, calls],
              T#{ref => TRef}).

%% What a pattern ships of each call, as a list of clauses (the first whose guard holds
%% applies): #{guard, ends, caller, elide}. ends: value (return or exception with
%% its value), none; caller: whether the caller comes too; elide: argument positions
%% never shipped, as {Position, Marker}. clause_ms/3 turns them into a match
%% specification; what the relay learned about a function (adapt) narrows it.
level_capture(basic) -> [capture([], none, false)];
level_capture(detailed) -> [capture([], value, false)];
level_capture(full) -> [capture([], value, true)].

function_capture(Level, _) when is_atom(Level), Level =/= undefined -> level_capture(Level);
function_capture(_, Capture) ->
    Ends = case lists:member(returns, Capture) orelse lists:member(exceptions, Capture) of
               true -> value;
               false -> none
           end,
    [capture([], Ends, lists:member(caller, Capture))].

capture(Guard, Ends, Caller) ->
    #{guard => Guard, ends => Ends, caller => Caller, elide => []}.

%% The process state a behaviour hands its callbacks is their last argument (the
%% second of code_change/3): it is never shipped with the call. State capture takes
%% it from the callback's return instead.
state_positions(M, Functions) ->
    Generic = case is_behaviour_module(M) of
                  true -> [{{F, A}, [{state_position(F, A), '$state'}]}
                           || {F, A} <- Functions, A > 0, is_state_callback(F, A)];
                  false -> []
              end,
    Known = case state_engine(M) of
                {Engine, M} -> [{{F, A}, role_elide(Role)}
                                || {{_, F, A}, Role} <- state_callbacks(Engine, M)];
                _ -> []
            end,
    maps:from_list(Generic ++ Known).

role_elide(Role) ->
    case lists:keyfind(Role, 1, [{gs_call, 3}, {gs_noreply, 2}, {gs_hibernate, 1},
                                 {gs_code_change, 2}, {gs_terminate, 2}, {ge_event, 2},
                                 {ge_call, 2}, {ge_code_change, 2}, {ge_terminate, 2},
                                 {sm_state, 3}, {sm_event, 4},
                                 {sm_code_change, 3}, {sm_terminate, 3}]) of
        {_, Position} -> [{Position, '$state'}];
        false -> []
    end.

is_behaviour_module(M) ->
    lists:any(fun({K, [_ | _]}) -> K =:= behaviour orelse K =:= behavior;
                 (_) -> false
              end, M:module_info(attributes))
        orelse erlang:function_exported(M, handle_call, 3)
        orelse erlang:function_exported(M, callback_mode, 0).

is_state_callback(F, A) ->
    Name = atom_to_list(F),
    lists:prefix("handle_", Name) orelse lists:prefix("prioritise_", Name)
        orelse lists:prefix("prioritize_", Name)
        orelse lists:member({F, A}, [{terminate, 2}, {terminate, 3}, {code_change, 3},
                                     {code_change, 4}, {format_status, 2}]).

state_position(code_change, 3) -> 2;
state_position(code_change, 4) -> 3;
state_position(_, A) -> A.

with_elided(Clauses, []) -> Clauses;
with_elided(Clauses, Elide) -> [C#{elide => Elide} || C <- Clauses].

%% A function whose values turned out large ships its calls' ends by time only, and
%% an argument position that turned out large (a process state handed to a helper
%% function) is no longer shipped: later calls cost the same whatever its size.
clause_ms(#{guard := Guard0, ends := Ends0, caller := Caller0, elide := Elide0}, Arity, Adapt) ->
    Guard = case Adapt of
                #{duty := Bit} -> Guard0 ++ [{'=/=', {'band', {get_tcw}, Bit}, 0}];
                _ -> Guard0
            end,
    Elide = lists:ukeysort(1, Elide0 ++ maps:get(elide, Adapt, [])),
    Ends = case {Ends0, maps:get(timed, Adapt, false)} of
               {value, true} -> time;
               _ -> Ends0
           end,
    Caller = Caller0 orelse Ends =:= time,
    {Head, Args} = case is_integer(Arity) andalso Elide =/= [] of
                       false -> {'_', '$_'};
                       true -> projection(Arity, Elide)
                   end,
    Message = {message, {{Args, if Caller -> {caller}; true -> none end, Ends}}},
    {Head, Guard, [Message | [{exception_trace} || Ends =:= value]]}.

projection(Arity, Elide) ->
    Vars = [list_to_atom([$$ | integer_to_list(I)]) || I <- lists:seq(1, Arity)],
    Head = [case lists:keymember(I, 1, Elide) of true -> '_'; false -> V end
            || {I, V} <- lists:zip(lists:seq(1, Arity), Vars)],
    Args = [case lists:keyfind(I, 1, Elide) of
                {I, Marker} -> {const, Marker};
                false -> V
            end || {I, V} <- lists:zip(lists:seq(1, Arity), Vars)],
    {Head, Args}.

%% A raw match specification given by the user: each clause ships the whole argument
%% list with the call, in place of any message action of its own.
user_ms(Ms) ->
    [{Head, Guard, [{message, {{'$_', none, ends_of(Body)}}}
                    | [A || A <- Body, not is_tuple(A) orelse element(1, A) =/= message]]}
     || {Head, Guard, Body} <- Ms].

ends_of(Body) ->
    case lists:member({exception_trace}, Body) orelse lists:member({return_trace}, Body) of
        true -> value;
        false -> none
    end.

%% A call to another process made from traced code (GenServer.call, :gen_statem.call,
%% gen_server2 and p1_server calls all go through gen:call/4) is a wait: its span says
%% who waited on whom (the first argument, as the caller named it), for what, since
%% when, and whether a reply came, it timed out or the callee died. The pattern is on
%% every process the trace flags; the relay keeps only the calls made inside traced
%% code (see wanted_call/3).
%% The calls that wait on another process: :gen.call/4 (GenServer.call, gen_statem,
%% gen_server2, p1_server) and, on a node running Elixir, Task.await/2.
waits() ->
    [{Mfa, local, [capture([], value, false)]}
     || {M, F, A} = Mfa <- [{gen, call, 4}, {'Elixir.Task', await, 2}],
        M =:= gen orelse code:is_loaded(elixir) =/= false,
        code:ensure_loaded(M) =:= {module, M}, erlang:function_exported(M, F, A)].

descendants([], _, Acc) -> lists:reverse(Acc);
descendants(_, Budget, Acc) when Budget =< 0 -> lists:reverse(Acc);
descendants(Parents, Budget, Acc) ->
    Children = [P || P <- erlang:processes(),
                     lists:member(parent_of(P), Parents), not lists:member(P, Acc)],
    Taken = lists:sublist(Children, Budget),
    descendants(Taken, Budget - length(Taken), lists:reverse(Taken, Acc)).

parent_of(P) ->
    case erlang:process_info(P, parent) of
        {parent, Parent} -> Parent;
        _ -> undefined
    end.

%% What a process trace's pattern on every function leaves out: BIFs (erlang), the
%% behaviours' own loops (gen, gen_server, gen_statem, gen_event, proc_lib), sys and
%% the system callbacks (a system message loops back into the server through them and
%% never returns). What is left is the code the process runs for the application,
%% libraries included.
system_exclusions() ->
    Forks = [{M, F, A} || M <- [gen_server2, p1_server],
                          {F, A} <- [{system_continue, 3}, {system_terminate, 4},
                                     {system_code_change, 4}, {system_get_state, 1},
                                     {system_replace_state, 2}]],
    Modules = [erlang, erts_internal, sys, gen, gen_server, gen_statem, gen_event, proc_lib],
    [{{M, '_', '_'}, global, off} || M <- Modules] ++ [{Mfa, global, off} || Mfa <- Forks].

include_flags(messages) -> [send, 'receive'];
include_flags(calls) -> [call];
include_flags(lifecycle) -> [procs];
include_flags(state) -> [call];
include_flags(_) -> [].

module_functions(M, Level) ->
    case code:ensure_loaded(M) of
        {module, M} ->
            Key = case Level of full -> functions; _ -> exports end,
            Fs = [{F, A} || {F, A} <- M:module_info(Key),
                            F =/= module_info, F =/= '__info__'],
            {ok, Fs};
        _ -> {error, {unknown_module, M}}
    end.

function_arities(M, F, A) ->
    case code:ensure_loaded(M) of
        {module, M} ->
            Arities = [Ar || {Fn, Ar} <- M:module_info(functions), Fn =:= F,
                             A =:= '_' orelse A =:= Ar],
            case Arities of
                [] -> {error, {unknown_function, M, F, A}};
                _ -> {ok, Arities}
            end;
        _ -> {error, {unknown_module, M}}
    end.

select(All, Only, Exclude) ->
    In = fun(Spec, {F, A}) ->
                 lists:any(fun({F1, A1}) -> F1 =:= F andalso A1 =:= A;
                              (F1) -> F1 =:= F end, Spec)
         end,
    [FA || FA <- All, Only =:= all orelse In(Only, FA), not In(Exclude, FA)].

resolve_pid(Pid) when is_pid(Pid) ->
    case is_process_alive(Pid) of
        true -> {ok, Pid};
        false -> {error, {no_process, Pid}}
    end;
resolve_pid(Name) when is_atom(Name) ->
    case whereis(Name) of
        undefined -> {error, {no_process, Name}};
        Pid -> {ok, Pid}
    end;
resolve_pid({Id1, Id2, Id3} = Numbers) ->
    try c:pid(Id1, Id2, Id3) of
        Pid -> resolve_pid(Pid)
    catch error:badarg -> {error, {no_process, Numbers}}
    end.

%% ---------------------------------------------------------------------------------
%% Applying what the traces want to the VM, with reference counting: the wanted
%% state is derived from all traces and only the difference is applied, so one
%% pattern wanted by two traces stays until both stop.

apply_state(St) ->
    Roles = state_index(St#st.traces),
    Big = maps:keys(St#st.big_states),
    WantPatterns = wanted_patterns(St#st.traces, St#st.adapt, Roles, Big),
    WantFlags = wanted_flags(St#st.traces, St#st.adapt, Big),
    Session = St#st.session,
    OldPatterns = St#st.applied_patterns,
    %% The wildcard {'_','_','_'} overwrites every pattern when set and clears every
    %% pattern when removed, so any change to it means applying all patterns again,
    %% the wildcard first.
    Wildcard = {'_', '_', '_'},
    WildcardChanged = maps:get(Wildcard, OldPatterns, none) =/= maps:get(Wildcard, WantPatterns, none),
    Removed = [Mfa || Mfa <- maps:keys(OldPatterns), not maps:is_key(Mfa, WantPatterns)],
    [begin
         catch tr_function(Session, Mfa, false, [local]),
         catch tr_function(Session, Mfa, false, [global])
     end || Mfa <- Removed],
    %% Broadest first: a pattern on a whole module ({M, '_', '_'}) overwrites those
    %% on its functions, as the wildcard overwrites every other.
    Reapply = lists:sort(fun({A, _}, {B, _}) -> {breadth(A), A} =< {breadth(B), B} end,
                         case WildcardChanged of
                             true -> maps:to_list(WantPatterns);
                             false -> [P || P = {Mfa, Spec} <- maps:to_list(WantPatterns),
                                            maps:get(Mfa, OldPatterns, none) =/= Spec]
                         end),
    [catch tr_function(Session, Mfa, Ms, [Where]) || {Mfa, {Where, Ms}} <- Reapply],
    OldFlags = St#st.applied_flags,
    [begin
         Gone = case maps:get(Target, WantFlags, []) of
                    [] -> [monotonic_timestamp | Old];
                    Want -> Old -- Want
                end,
         Gone =/= [] andalso (catch tr_process(Session, Target, false, Gone))
     end || {Target, Old} <- maps:to_list(OldFlags)],
    Tracer = self(),
    [begin
         New = Want -- maps:get(Target, OldFlags, []),
         New =/= [] andalso
             (catch tr_process(Session, Target, true,
                               [monotonic_timestamp, {tracer, Tracer} | New]))
     end || {Target, Want} <- maps:to_list(WantFlags)],
    %% Re-apply per-process flags that removing 'all' flags may have taken away.
    [catch tr_process(Session, Target, true, [monotonic_timestamp, {tracer, Tracer} | Want])
     || {Target, Want} <- maps:to_list(WantFlags), Target =/= all],
    untrace_self(Session, St#st.watcher),
    St#st.watcher ! {applied, WantPatterns, WantFlags, Session},
    St#st{applied_patterns = WantPatterns, applied_flags = WantFlags, state_roles = Roles,
          state_pids = maps:from_list([{P, R} || {R, #{kind := process, pid := P,
                                                       include := Include}}
                                                     <- maps:to_list(St#st.traces),
                                                 lists:member(state, Include)])}.

breadth({'_', '_', '_'}) -> 0;
breadth({_, '_', '_'}) -> 1;
breadth(_) -> 2.

untrace_self(Session, Watcher) ->
    catch tr_process(Session, self(), false, [all]),
    catch tr_process(Session, Watcher, false, [all]).

wanted_patterns(Traces, Adapt, Roles, Big) ->
    Wanted = lists:foldl(
      fun({Mfa, Where, Capturing}, Acc) ->
              case maps:get(Mfa, Acc, none) of
                  none -> Acc#{Mfa => {Where, Capturing}};
                  {W0, C0} ->
                      Acc#{Mfa => {stronger_where(W0, Where), merge_captures(C0, Capturing)}}
              end
      end, #{}, lists:append([maps:get(patterns, T) || T <- maps:values(Traces)])),
    maps:map(fun({_, _, Arity} = Mfa, {Where, Capturing}) ->
                     {Where, match_spec(over_budget_first(Mfa, Capturing, Roles, Big), Arity,
                                        maps:get(Mfa, Adapt, #{}))}
             end, Wanted).

%% Processes whose state went over its budget: their state callbacks end by time.
over_budget_first(Mfa, Clauses, Roles, Big) when is_list(Clauses), Big =/= [] ->
    case Roles of
        #{Mfa := {Role, _}} ->
            [(capture([{'=:=', {self}, P}], time, false))#{elide => role_elide(Role)}
             || P <- Big] ++ Clauses;
        _ -> Clauses
    end;
over_budget_first(_, Capturing, _, _) -> Capturing.

match_spec({match, Ms}, _, _) -> Ms;
match_spec(off, _, _) -> false;
match_spec(_, _, #{shed := _}) -> false;
match_spec(Clauses, Arity, Adapt) -> [clause_ms(C, Arity, Adapt) || C <- Clauses].

stronger_where(local, _) -> local;
stronger_where(_, W) -> W.

%% Two traces wanting one function: clauses guarded to one process each come first,
%% each also taking what the unguarded clause (every other process) asks for; a
%% position is elided only when every trace elides it.
merge_captures(off, Other) -> Other;
merge_captures(Other, off) -> Other;
merge_captures({match, _} = User, _) -> User;
merge_captures(_, {match, _} = User) -> User;
merge_captures(C0, C1) ->
    {Open, Guarded} = lists:partition(fun(#{guard := G}) -> G =:= [] end, C0 ++ C1),
    case Open of
        [] -> lists:usort(Guarded);
        [First | More] ->
            Any = lists:foldl(fun widen/2, First, More),
            [widen(Any, G) || G <- lists:usort(Guarded)] ++ [Any]
    end.

widen(#{ends := E0, caller := C0, elide := L0},
      Clause = #{ends := E1, caller := C1, elide := L1}) ->
    Ends = case E0 =:= value orelse E1 =:= value of true -> value; false -> none end,
    Clause#{ends := Ends, caller := C0 orelse C1, elide := [P || P <- L1, lists:member(P, L0)]}.

%% Calls are traced with the arity flag, so a call's message carries what its pattern
%% ships and nothing more; return_to only while some function is closed by time.
wanted_flags(Traces, Adapt, Big) ->
    Timed = Big =/= [] orelse
        lists:any(fun(A) -> maps:get(timed, A, false) end, maps:values(Adapt)) orelse
        lists:any(fun(T) -> maps:get(timed_ends, T, false) end, maps:values(Traces)),
    Flags = lists:foldl(
              fun({Target, Fs}, Acc) ->
                      Acc#{Target => lists:usort(maps:get(Target, Acc, []) ++ Fs)}
              end, #{},
              lists:append([maps:to_list(maps:get(flags, T)) || T <- maps:values(Traces)])),
    maps:map(fun(_, Fs) ->
                     case lists:member(call, Fs) of
                         true -> lists:usort(Fs ++ [arity | [return_to || Timed]]);
                         false -> Fs
                     end
             end, Flags).

remove_flags(St) ->
    [catch tr_process(St#st.session, Target, false, [monotonic_timestamp | Fs])
     || {Target, Fs} <- maps:to_list(St#st.applied_flags)],
    St.

remove_all(St00) ->
    St0 = detach_framework(maps:keys(St00#st.handlers), St00),
    St0#st.watcher ! {duty, off},
    St = St0#st{duty = false,
                adapt = maps:map(fun(_, A) -> maps:remove(duty, A) end, St0#st.adapt)},
    [catch tr_process(St#st.session, P, false, [all])
     || {P, R} <- maps:to_list(St#st.members), not is_tuple(R)],
    remove_applied(St#st.session, St#st.applied_patterns, St#st.applied_flags),
    St#st.watcher ! {applied, #{}, #{}, St#st.session},
    St#st{applied_patterns = #{}, applied_flags = #{}, members = #{}}.

%% Flags first: taking the call flag off stops new trace messages at once (a few
%% milliseconds), while removing patterns waits for every scheduler to pass a code
%% barrier, which under a flood can take a second, each. So a module all of whose
%% traced functions are ours loses its patterns in one change ({M, '_', '_'}); in
%% a module where another tracer has patterns too, ours go one by one.
remove_applied(Session, Patterns, Flags) ->
    [catch tr_process(Session, Target, false, [monotonic_timestamp | Fs])
     || {Target, Fs} <- maps:to_list(Flags)],
    [begin
         catch tr_function(Session, Pattern, false, [local]),
         catch tr_function(Session, Pattern, false, [global])
     end || Pattern <- removal_patterns(Session, maps:keys(Patterns))],
    ok.

removal_patterns({session, _}, Mfas) -> Mfas;
removal_patterns(legacy, Mfas) ->
    ByModule = lists:foldl(fun({M, _, _} = Mfa, Acc) ->
                                   Acc#{M => [Mfa | maps:get(M, Acc, [])]}
                           end, #{}, Mfas),
    lists:append(
      [case M =/= '_' andalso lists:all(fun(Mfa) -> is_tuple(Mfa) end, Ours)
           andalso only_ours(M, Ours) of
           true -> [{M, '_', '_'}];
           false -> Ours
       end || {M, Ours} <- maps:to_list(ByModule)]).

only_ours(M, Ours) ->
    try M:module_info(functions) of
        Functions ->
            lists:all(fun({F, A}) ->
                              lists:member({M, F, A}, Ours) orelse
                                  erlang:trace_info({M, F, A}, traced) =:= {traced, false}
                      end, Functions)
    catch _:_ -> false
    end.

%% ---------------------------------------------------------------------------------
%% The framework layer: Phoenix, LiveView, Channels and Ecto, read through :telemetry
%%
%% A framework trace attaches framework_event/4 to the framework's telemetry events
%% (the handler is this module's function; detaching it is part of removing the
%% tracing, in the relay and in the watcher). The handler runs in the process that
%% emits the event, so it takes out of the metadata only the few fields each view
%% needs (never the conn or the socket whole, which the VM would copy into the
%% message), redacts secrets there, and sends them to the relay, which turns them
%% into records under the same limits as trace messages:
%%   * a request, a router dispatch, a LiveView or LiveComponent callback (telemetry
%%     spans): a call record (1) at start and a return (2) or exception (3) at stop,
%%     named after the function they stand for (the endpoint's call/2, the
%%     controller action, the view's handle_event/3 ...);
%%   * an Ecto query, a socket connect, a channel join or handle_in (known only when
%%     done, with a duration): a call record back-dated by that duration, and its end;
%%   * a LiveView's assigns (its components' under '@components') after mount,
%%     handle_params, handle_event, a component's update or event, and before a
%%     render that follows any other change (handle_info): state records (17), as
%%     for a GenServer, under max_state_bytes.
%% The handle_info/2 callbacks of LiveViews and channels, which emit no telemetry,
%% and the routers' pipelines are traced like functions, their socket or conn never
%% shipped and their ends by time.

framework_spec(Spec) ->
    case code:is_loaded(telemetry) =/= false andalso
        erlang:function_exported(telemetry, attach_many, 4) of
        false -> {error, no_telemetry};
        true ->
            Repos = maps:get(repos, Spec, auto),
            Events = framework_events(repo_prefixes(Repos)),
            AppModules = framework_modules(),
            Modules = [{M, K} || M <- AppModules, K <- [framework_kind(M)], K =/= none],
            Patterns = [{{M, handle_info, 2}, local,
                         [#{guard => [], ends => time, caller => true,
                            elide => [{2, '$state'}]}]}
                        || {M, K} <- Modules, K =:= live_view orelse K =:= channel,
                           exports(M, handle_info, 2),
                           %% A pattern holds only on a loaded module.
                           code:ensure_loaded(M) =:= {module, M}]
                ++ [{{'Elixir.Phoenix.Channel.Server', reply, 6}, local, [capture([], none, false)]}
                    || code:ensure_loaded('Elixir.Phoenix.Channel.Server')
                           =:= {module, 'Elixir.Phoenix.Channel.Server'},
                       erlang:function_exported('Elixir.Phoenix.Channel.Server', reply, 6)]
                ++ [{{'Elixir.Phoenix.PubSub', F, A}, local, [capture([], none, false)]}
                    || code:ensure_loaded('Elixir.Phoenix.PubSub') =:= {module, 'Elixir.Phoenix.PubSub'},
                       {F, A} <- broadcast_functions()]
                ++ [{{R, P, 2}, local,
                     [#{guard => [], ends => time, caller => true,
                        elide => [{1, '$conn'}, {2, '$opts'}]}]}
                    || {R, P} <- router_pipelines(AppModules)],
            {ok, #{kind => framework, rate => 1.0, want_args => true, timed_ends => true,
                   events => Events, patterns => Patterns,
                   flags => case Patterns of [] -> #{}; _ -> #{all => [call]} end,
                   redact => [string:lowercase(to_bin(R))
                              || R <- maps:get(redact, Spec, default_redactions())]}}
    end.

default_redactions() ->
    [<<"password">>, <<"passwd">>, <<"secret">>, <<"token">>, <<"csrf">>, <<"api_key">>,
     <<"authorization">>, <<"cookie">>, <<"private_key">>].

%% The modules of the applications built on Phoenix, read from their beam files
%% (loaded or not: a LiveView is loaded on its first request).
framework_modules() ->
    Apps = [App || {App, _, _} <- application:which_applications(),
                   {ok, Deps} <- [application:get_key(App, applications)],
                   lists:member(phoenix, Deps) orelse lists:member(phoenix_live_view, Deps)],
    lists:usort([M || App <- Apps, {ok, Ms} <- [application:get_key(App, modules)], M <- Ms]).

%% The pipelines of the routers (pipeline :browser compiles to browser/2, exported)
%% and the function plugs a router defines: every exported F/2 of a router but call/2
%% and Phoenix's own (__name__). A request's plug pipeline is a span inside its
%% dispatch. Their conn and options never ship.
router_pipelines(AppModules) ->
    [{R, P} || R <- AppModules, exports(R, '__routes__', 0),
               code:ensure_loaded(R) =:= {module, R},
               {P, 2} <- R:module_info(exports), P =/= call,
               not lists:prefix("__", atom_to_list(P))].

exports(M, F, A) ->
    case beam_attributes(M) of
        {ok, _, Exports} -> lists:member({F, A}, Exports);
        error -> false
    end.

beam_attributes(M) ->
    case code:which(M) of
        File when is_list(File) ->
            case beam_lib:chunks(File, [attributes, exports]) of
                {ok, {M, [{attributes, Attrs}, {exports, Exports}]}} -> {ok, Attrs, Exports};
                _ -> error
            end;
        _ -> error
    end.

framework_kind(M) ->
    Declared = case beam_attributes(M) of
                   {ok, Attrs, _} -> lists:append([Bs || {K, Bs} <- Attrs,
                                                         K =:= behaviour orelse K =:= behavior]);
                   error -> []
               end,
    case Declared of
        Bs when is_list(Bs) ->
            Known = [{'Elixir.Phoenix.LiveView', live_view},
                     {'Elixir.Phoenix.LiveComponent', live_component},
                     {'Elixir.Phoenix.Channel', channel}],
            case [K || {B, K} <- Known, lists:member(B, Bs)] of
                [K | _] -> K;
                [] -> none
            end;
        _ -> none
    end.

%% The telemetry prefix of each running Ecto repo ([my_app, repo] for MyApp.Repo).
repo_prefixes(auto) ->
    Running = case erlang:function_exported('Elixir.Ecto.Repo.Registry', all_running, 0) of
                  true -> catch 'Elixir.Ecto.Repo.Registry':all_running();
                  false -> []
              end,
    lists:usort([Prefix || Repo <- if is_list(Running) -> Running; true -> [] end,
                           is_atom(Repo), Prefix <- repo_prefix(Repo)]);
repo_prefixes(Prefixes) when is_list(Prefixes) -> Prefixes.

repo_prefix(Repo) ->
    case catch Repo:config() of
        Config when is_list(Config) ->
            case proplists:get_value(telemetry_prefix, Config) of
                P when is_list(P), P =/= [] -> [P];
                _ -> []
            end;
        _ -> []
    end.

framework_events(RepoPrefixes) ->
    Spans = [[phoenix, endpoint], [phoenix, router_dispatch]]
        ++ [[phoenix, live_view, W] || W <- [mount, handle_params, handle_event, render]]
        ++ [[phoenix, live_component, W] || W <- [handle_event, update]],
    [Prefix ++ [Phase] || Prefix <- Spans, Phase <- [start, stop, exception]]
        ++ [[phoenix, socket_connected], [phoenix, channel_joined],
            [phoenix, channel_handled_in]]
        ++ [Prefix ++ [query] || Prefix <- RepoPrefixes].

attach_framework(TRef, T, St) ->
    Id = {elixirscope, this_module(), TRef},
    Config = #{relay => self(), redact => maps:get(redact, T),
               max_state_bytes => map_get(max_state_bytes, St#st.limits)},
    Handler = erlang:make_fun(this_module(), framework_event, 4),
    case catch telemetry:attach_many(Id, maps:get(events, T), Handler, Config) of
        ok ->
            Handlers = (St#st.handlers)#{TRef => Id},
            St#st.watcher ! {handlers, maps:values(Handlers)},
            {ok, St#st{handlers = Handlers}};
        Error ->
            {_, St1} = handle_request({stop_trace, TRef}, St),
            {{error, {telemetry_attach, Error}}, St1}
    end.

detach_framework(TRefs, St) ->
    {Gone, Kept} = maps:fold(fun(R, Id, {G, K}) ->
                                     case lists:member(R, TRefs) of
                                         true -> {[Id | G], K};
                                         false -> {G, K#{R => Id}}
                                     end
                             end, {[], #{}}, St#st.handlers),
    case Gone of
        [] -> St;
        _ ->
            detach_handlers(Gone),
            St#st.watcher ! {handlers, maps:values(Kept)},
            case map_size(Kept) of
                0 -> St#st{handlers = Kept, live = #{}, fw_open = #{}};
                _ -> St#st{handlers = Kept}
            end
    end.

detach_handlers(Ids) ->
    [catch telemetry:detach(Id) || Id <- Ids],
    ok.

%% The handler. It never raises: telemetry detaches a handler that does.
framework_event(Event, Measurements, Meta, Config = #{relay := Relay}) ->
    try framework_items(Event, Measurements, Meta, Config) of
        [] -> ok;
        Items -> Relay ! {es_fw, self(), erlang:monotonic_time(nanosecond), Items}, ok
    catch _:_ -> ok
    end.

%% What leaves the emitting process: a list of
%%   {open, Mfa, Args} | {close, Mfa, Value} | {raise, Mfa, {Class, Reason, Stack}}
%%   | {done, Mfa, Args, Value, DurationNs}        (back-dated: known when done)
%%   | {assigns, Mfa, Assigns} | {component, Mfa, Key, Assigns}   (states, Mfa the
%%     callback that changed them)
framework_items([phoenix, endpoint, start], _, #{conn := Conn}, C) ->
    [{open, {endpoint(Conn), call, 2}, [request_fields(Conn, C)]}];
framework_items([phoenix, endpoint, stop], _, #{conn := Conn}, _) ->
    [{close, {endpoint(Conn), call, 2}, #{status => map_get(status, Conn)}}];
framework_items([phoenix, endpoint, exception], _, Meta = #{conn := Conn}, _) ->
    [{raise, {endpoint(Conn), call, 2}, failure(Meta)}];
framework_items([phoenix, router_dispatch, start], _, Meta = #{conn := Conn}, C) ->
    Fields = #{route => maps:get(route, Meta, undefined),
               path_params => redact(maps:get(path_params, Meta, #{}), C),
               params => redact(maps:get(params, Conn, #{}), C),
               pipe_through => maps:get(pipe_through, Meta, [])},
    [{open, dispatch_mfa(Meta), [Fields]}];
framework_items([phoenix, router_dispatch, stop], _, Meta = #{conn := Conn}, _) ->
    [{close, dispatch_mfa(Meta), #{status => map_get(status, Conn)}}];
framework_items([phoenix, router_dispatch, exception], _, Meta, _) ->
    [{raise, dispatch_mfa(Meta), failure(Meta)}];
framework_items([phoenix, live_view, What, Phase], _, Meta = #{socket := Socket}, C) ->
    View = map_get(view, Socket),
    Mfa = {View, What, case What of render -> 1; _ -> 3 end},
    case Phase of
        start when What =:= render ->
            %% Assigns changed since the last callback that emits telemetry: by
            %% handle_info (or handle_call, handle_cast, handle_async).
            [{assigns, {View, handle_info, 2}, assigns(Socket, C)}, {open, Mfa, []}];
        start -> [{open, Mfa, live_args(What, Meta, C)}];
        stop when What =:= render -> [{close, Mfa, ok}];
        stop -> [{close, Mfa, ok}, {assigns, Mfa, assigns(Socket, C)}];
        exception -> [{raise, Mfa, failure(Meta)}]
    end;
framework_items([phoenix, live_component, handle_event, Phase], _,
                Meta = #{socket := Socket, component := Component}, C) ->
    Mfa = {Component, handle_event, 3},
    case Phase of
        start -> [{open, Mfa, [maps:get(event, Meta, undefined),
                               redact(maps:get(params, Meta, #{}), C)]}];
        stop -> [{close, Mfa, ok},
                 {component, Mfa, component_key(Component, Socket), assigns(Socket, C)}];
        exception -> [{raise, Mfa, failure(Meta)}]
    end;
framework_items([phoenix, live_component, update, Phase], _,
                Meta = #{component := Component}, C) ->
    Mfa = {Component, update, 2},
    case Phase of
        start -> [{open, Mfa, []}];
        stop ->
            Sockets = [S || S <- maps:get(sockets, Meta, []), is_map(S)],
            [{close, Mfa, ok}
             | [{component, Mfa, component_key(Component, S), assigns(S, C)} || S <- Sockets]];
        exception -> [{raise, Mfa, failure(Meta)}]
    end;
framework_items([phoenix, socket_connected], #{duration := D}, Meta, C) ->
    Socket = maps:get(user_socket, Meta, 'Elixir.Phoenix.Socket'),
    [{done, {Socket, connect, 3}, [redact(maps:get(params, Meta, #{}), C)],
      short(maps:get(result, Meta, undefined)), native_ns(D)}];
framework_items([phoenix, channel_joined], #{duration := D}, Meta = #{socket := Socket}, C) ->
    [{done, {map_get(channel, Socket), join, 3},
      [map_get(topic, Socket), redact(maps:get(params, Meta, #{}), C)],
      short(maps:get(result, Meta, undefined)), native_ns(D)}];
framework_items([phoenix, channel_handled_in], #{duration := D},
                Meta = #{socket := Socket}, C) ->
    [{done, {map_get(channel, Socket), handle_in, 3},
      [maps:get(event, Meta, undefined), redact(maps:get(params, Meta, #{}), C)],
      #{topic => map_get(topic, Socket)}, native_ns(D)}];
framework_items(Event, Measurements, Meta = #{repo := Repo}, _) ->
    case lists:last(Event) of
        query ->
            Total = maps:get(total_time, Measurements, 0),
            Times = maps:from_list([{Us, native_ns(V) div 1000}
                                    || {K, Us} <- [{total_time, total_us}, {queue_time, queue_us},
                                                   {query_time, query_us},
                                                   {decode_time, decode_us},
                                                   {idle_time, idle_us}],
                                       V <- [maps:get(K, Measurements, nil)], is_integer(V)]),
            {Outcome, Rows} = query_result(maps:get(result, Meta, undefined)),
            Value = Times#{source => maps:get(source, Meta, nil), rows => Rows,
                           outcome => Outcome},
            [{done, {Repo, query, 2},
              [maps:get(query, Meta, <<>>), maps:get(params, Meta, [])], Value,
              native_ns(Total)}];
        _ -> []
    end;
framework_items(_, _, _, _) -> [].

endpoint(#{private := #{phoenix_endpoint := E}}) -> E;
endpoint(_) -> 'Elixir.Phoenix.Endpoint'.

dispatch_mfa(Meta) ->
    case {maps:get(plug, Meta, undefined), maps:get(plug_opts, Meta, undefined)} of
        {'Elixir.Phoenix.LiveView.Plug', _} -> {'Elixir.Phoenix.LiveView.Plug', call, 2};
        {Plug, Action} when is_atom(Plug), is_atom(Action) -> {Plug, Action, 2};
        {Plug, _} when is_atom(Plug) -> {Plug, call, 2};
        _ -> {'Elixir.Phoenix.Router', dispatch, 2}
    end.

request_fields(Conn, C) ->
    Headers = [{K, V} || {K, V} <- maps:get(req_headers, Conn, []),
                         K =/= <<"cookie">>, K =/= <<"authorization">>]
        ++ [{K, <<"[REDACTED]">>} || {K, _} <- maps:get(req_headers, Conn, []),
                                     K =:= <<"cookie">> orelse K =:= <<"authorization">>],
    #{method => maps:get(method, Conn, nil), path => maps:get(request_path, Conn, nil),
      query => maps:get(query_string, Conn, <<>>), headers => redact(Headers, C),
      remote_ip => maps:get(remote_ip, Conn, nil)}.

live_args(mount, Meta, C) ->
    [redact(maps:get(params, Meta, #{}), C), maps:get(uri, Meta, nil)];
live_args(handle_params, Meta, C) ->
    [redact(maps:get(params, Meta, #{}), C), maps:get(uri, Meta, nil)];
live_args(handle_event, Meta, C) ->
    [maps:get(event, Meta, nil), redact(maps:get(params, Meta, #{}), C)];
live_args(_, _, _) -> [].

%% A socket's assigns without LiveView's change tracking, secrets redacted; or
%% {too_large, Bytes} over max_state_bytes (sized without being copied).
assigns(Socket, C) ->
    Assigns = maps:without(['__changed__', myself], maps:get(assigns, Socket, #{})),
    Size = erlang:external_size(Assigns),
    case Size =< maps:get(max_state_bytes, C) of
        true -> redact(Assigns, C);
        false -> {too_large, Size}
    end.

component_key(Component, Socket) ->
    {Component, maps:get(id, maps:get(assigns, Socket, #{}), nil)}.

%% {Kind, Reason, Stack}; what a plug raised is unwrapped from the Plug.Conn.WrapperError
%% that carries it with the whole conn.
failure(Meta) ->
    case maps:get(reason, Meta, undefined) of
        #{'__struct__' := 'Elixir.Plug.Conn.WrapperError', kind := K, reason := R, stack := S} ->
            {K, R, lists:sublist(S, 20)};
        Reason ->
            {maps:get(kind, Meta, error), Reason, lists:sublist(maps:get(stacktrace, Meta, []), 20)}
    end.

query_result({ok, Result}) when is_map(Result) -> {ok, maps:get(num_rows, Result, nil)};
query_result({error, Reason}) -> {error, short(Reason)};
query_result(_) -> {unknown, nil}.

short({Tag, Value}) when is_atom(Tag) -> {Tag, erlang:external_size(Value)};
short(Other) when is_atom(Other) -> Other;
short(Other) when is_map(Other) -> maps:get('__struct__', Other, map);
short(_) -> term.

native_ns(T) -> erlang:convert_time_unit(T, native, nanosecond).

%% Values under keys that name a secret (params, assigns, headers) are replaced.
redact(Term, #{redact := Patterns}) -> redact(Term, Patterns, 6).

redact(Term, _, 0) -> Term;
redact(Map, Patterns, Depth) when is_map(Map), not is_map_key('__struct__', Map) ->
    maps:map(fun(K, V) ->
                     case secret_key(K, Patterns) of
                         true -> <<"[REDACTED]">>;
                         false -> redact(V, Patterns, Depth - 1)
                     end
             end, Map);
redact(List, Patterns, Depth) when is_list(List) ->
    [case E of
         {K, V} when is_binary(K); is_atom(K) ->
             case secret_key(K, Patterns) of
                 true -> {K, <<"[REDACTED]">>};
                 false -> {K, redact(V, Patterns, Depth - 1)}
             end;
         _ -> redact(E, Patterns, Depth - 1)
     end || E <- List];
redact(Term, _, _) -> Term.

secret_key(K, Patterns) when is_atom(K); is_binary(K) ->
    Name = string:lowercase(to_bin(K)),
    lists:any(fun(P) -> binary:match(Name, P) =/= nomatch end, Patterns);
secret_key(_, _) -> false.

to_bin(A) when is_atom(A) -> atom_to_binary(A, utf8);
to_bin(B) when is_binary(B) -> B;
to_bin(L) when is_list(L) -> unicode:characters_to_binary(L).

%% A broadcast over Phoenix.PubSub (a channel's broadcast!, a LiveView's PubSub
%% message) is traced as a call; the relay records it as a framework span whose value
%% is who it reached: the processes subscribed to the topic then (at most 50 named,
%% all counted), read from the PubSub's registry.
%% Every broadcast (the shorter arities, the bang versions) ends in one call of one
%% of these.
broadcast_functions() ->
    [{F, A} || {F, A} <- [{broadcast, 4}, {broadcast_from, 5}, {local_broadcast, 4},
                          {local_broadcast_from, 5}, {direct_broadcast, 5}],
               erlang:function_exported('Elixir.Phoenix.PubSub', F, A)].

broadcast_args(F, Args) ->
    case {atom_to_list(F), Args} of
        {"broadcast_from", [PubSub, From, Topic, Message | _]} -> {PubSub, From, Topic, Message};
        {"local_broadcast_from", [PubSub, From, Topic, Message | _]} -> {PubSub, From, Topic, Message};
        {"direct_broadcast", [_Node, PubSub, Topic, Message | _]} -> {PubSub, none, Topic, Message};
        {_, [PubSub, Topic, Message | _]} -> {PubSub, none, Topic, Message};
        _ -> none
    end.

on_broadcast(_, _, none, _, St) -> St;
on_broadcast(Pid, Mfa, {PubSub, From, Topic, Message}, Ts, St) ->
    case [R || {R, #{kind := framework}} <- maps:to_list(St#st.traces)] of
        [] -> St;
        [TRef | _] ->
            Subscribers = case catch 'Elixir.Registry':lookup(PubSub, Topic) of
                              Found when is_list(Found) ->
                                  lists:usort([P || {P, _} <- Found, is_pid(P), P =/= From]);
                              _ -> []
                          end,
            St1 = record(1, 8 bor 64, Pid, Ts, Mfa, 0, [Topic, Message], [TRef], St),
            record(2, 0, Pid, Ts, Mfa, 0, #{reached => lists:sublist(Subscribers, 50),
                                            count => length(Subscribers)}, [TRef], St1)
    end.

%% A channel's reply to a push (handle_in's {:reply, {status, payload}, socket}) goes
%% through Phoenix.Channel.Server.reply/6, after the handled_in telemetry: a framework
%% span whose value is the reply.
on_channel_reply(Pid, Mfa, Args, Reply, Ts, St) ->
    case [R || {R, #{kind := framework}} <- maps:to_list(St#st.traces)] of
        [] -> St;
        [TRef | _] ->
            St1 = record(1, 8 bor 64, Pid, Ts, Mfa, 0, Args, [TRef], St),
            record(2, 0, Pid, Ts, Mfa, 0, Reply, [TRef], St1)
    end.

%% In the relay: the handler's items become records of the framework trace.
on_framework(_, _, _, St = #st{tripped = Tripped}) when Tripped =/= false -> St;
on_framework(Pid, Ts, Items, St0) ->
    St = St0#st{received = St0#st.received + 1},
    case [R || {R, #{kind := framework}} <- maps:to_list(St#st.traces)] of
        [] -> St;
        [TRef | _] -> lists:foldl(fun(I, Acc) -> fw_record(Pid, Ts, I, [TRef], Acc) end,
                                  St, Items)
    end.

fw_record(Pid, Ts, {open, Mfa, Args}, Refs, St) ->
    Open = maps:get(Pid, St#st.fw_open, []),
    record(1, 8 bor 64, Pid, Ts, Mfa, 0, Args, Refs,
           set_fw_open(Pid, [{Mfa, open} | Open], St));
fw_record(Pid, Ts, {close, Mfa, Value}, Refs, St) ->
    fw_end(Pid, Ts, Mfa, {2, Value}, Refs, St);
fw_record(Pid, Ts, {raise, Mfa, Failure}, Refs, St) ->
    fw_end(Pid, Ts, Mfa, {3, Failure}, Refs, St);
fw_record(Pid, Ts, {done, Mfa, Args, Value, Ns}, Refs, St) ->
    St1 = record(1, 8 bor 64, Pid, Ts - Ns, Mfa, 0, Args, Refs, St),
    record(2, 0, Pid, Ts, Mfa, 0, Value, Refs, St1);
fw_record(Pid, Ts, {assigns, Mfa, Assigns}, Refs, St) ->
    {_, Components} = maps:get(Pid, St#st.live, {#{}, #{}}),
    live_state(Pid, Ts, Mfa, Assigns, Components, Refs, St);
fw_record(Pid, Ts, {component, Mfa, Key, Assigns}, Refs, St) ->
    {ViewAssigns, Components} = maps:get(Pid, St#st.live, {#{}, #{}}),
    live_state(Pid, Ts, Mfa, ViewAssigns, Components#{Key => Assigns}, Refs, St).

%% A framework span ends inside-out. One that ends while a span it encloses is still
%% open (Plug.Telemetry's stop runs before the response is sent, inside the
%% controller action) ends right after that span does, keeping its own value.
fw_end(Pid, Ts, Mfa, End, Refs, St) ->
    Open = maps:get(Pid, St#st.fw_open, []),
    case lists:keyfind(Mfa, 1, Open) of
        false -> fw_emit(Pid, Ts, Mfa, End, Refs, St);
        _ ->
            case Open of
                [{Mfa, _} | Rest] -> fw_unwind(Pid, Ts, Rest, Refs,
                                               fw_emit(Pid, Ts, Mfa, End, Refs, St));
                _ ->
                    Marked = lists:keyreplace(Mfa, 1, Open, {Mfa, {ended, End}}),
                    set_fw_open(Pid, Marked, St)
            end
    end.

fw_unwind(Pid, Ts, [{Mfa, {ended, End}} | Rest], Refs, St) ->
    fw_unwind(Pid, Ts, Rest, Refs, fw_emit(Pid, Ts, Mfa, End, Refs, St));
fw_unwind(Pid, _, Open, _, St) ->
    set_fw_open(Pid, Open, St).

fw_emit(Pid, Ts, Mfa, {Kind, Value}, Refs, St) ->
    record(Kind, 0, Pid, Ts, Mfa, 0, Value, Refs, St).

%% Open framework spans per process; a process that leaves spans open for good (it
%% died inside one) is forgotten when more than 10,000 processes have some open.
set_fw_open(Pid, [], St) -> St#st{fw_open = maps:remove(Pid, St#st.fw_open)};
set_fw_open(Pid, Open, St = #st{fw_open = All}) when map_size(All) < 10000;
                                                      is_map_key(Pid, All) ->
    St#st{fw_open = All#{Pid => lists:sublist(Open, 64)}};
set_fw_open(Pid, Open, St) -> St#st{fw_open = #{Pid => Open}}.

%% A LiveView's state: its assigns, and its components' under '@components'. A state
%% that did not change is not sent again (a render after nothing but a render); one
%% over max_state_bytes (sized in the LiveView's process) is reported, not sent.
live_state(Pid, Ts, Mfa, Assigns, Components, Refs, St) ->
    St1 = St#st{live = (St#st.live)#{Pid => {Assigns, Components}}},
    Parts = [Assigns | maps:values(Components)],
    case [Size || {too_large, Size} <- Parts] of
        [_ | _] = Sizes ->
            N = next_state_number(Pid, St1),
            state_record(Pid, Ts, Mfa, 0, {N, {too_large, lists:sum(Sizes)}}, Refs,
                         keep_state(Pid, {N, unknown}, St1));
        [] ->
            State = case map_size(Components) of
                        0 -> Assigns;
                        _ -> Assigns#{'@components' => Components}
                    end,
            case maps:get(Pid, St1#st.states, none) of
                {_, _, Last, _} when Last =:= State -> St1;
                _ -> emit_state(Pid, Ts, Mfa, State, Refs, St1)
            end
    end.

%% ---------------------------------------------------------------------------------
%% The trace primitives: the node-wide legacy session on OTP 25/26, a session of
%% our own where trace sessions exist (OTP 27+), so other tools keep theirs.

open_session(Name, Tracer) ->
    case erlang:function_exported(trace, session_create, 3) of
        true -> {session, apply(trace, session_create, [Name, Tracer, []])};
        false -> legacy
    end.

tr_function(legacy, Mfa, Ms, Flags) -> erlang:trace_pattern(Mfa, Ms, Flags);
tr_function({session, S}, Mfa, Ms, Flags) -> apply(trace, function, [S, Mfa, Ms, Flags]).

tr_process(legacy, Target, How, Flags) -> erlang:trace(Target, How, Flags);
tr_process({session, S}, Target, How, Flags) ->
    apply(trace, process, [S, Target, How, [F || F <- Flags, not is_tuple(F)]]).

close_session(legacy) -> ok;
close_session({session, S}) -> catch apply(trace, session_destroy, [S]).

%% ---------------------------------------------------------------------------------
%% The watcher

%% Besides cleaning up, the watcher guards the limits that a starved or flooded
%% relay cannot check in time: it runs at high priority, looks at the relay's queue,
%% the relay's memory counted whole (heap, stack, the trace messages queued off its
%% heap, and the binaries it holds; binaries that queued messages share with the
%% traced processes are theirs until received) and the node's memory every 100 ms,
%% and over a limit removes the tracing itself and tells the owner, ahead of the
%% relay's backlog. The relay then keeps what it has captured and discards the rest
%% of its queue. The relay's max_heap_size (kill) is only a last resort, far above.
watcher_init(Relay, Module, Owner, Limits) ->
    process_flag(priority, high),
    MRef = monitor(process, Relay),
    OwnerRef = monitor(process, Owner),
    Now = erlang:monotonic_time(millisecond),
    watcher_loop(#{relay => Relay, mref => MRef, owner_ref => OwnerRef, module => Module,
                   owner => Owner, limits => Limits, patterns => #{}, flags => #{},
                   session => legacy, tripped => false, duty => 1.0, duty_on => true,
                   bit => undefined, next_guard => Now + 100, next_toggle => infinity}).

watcher_loop(W = #{relay := Relay, mref := MRef}) ->
    Now = erlang:monotonic_time(millisecond),
    Next = min(maps:get(next_guard, W), maps:get(next_toggle, W)),
    receive
        {duty, off} ->
            watcher_loop(retune(off, W));
        {duty, D, Bit} ->
            watcher_loop(retune(D, W#{bit := Bit}));
        {applied, P, F, S} ->
            watcher_loop(W#{patterns := P, flags := F, session := S});
        {handlers, Ids} ->
            watcher_loop(W#{handlers => Ids});
        {limits, L} ->
            watcher_loop(W#{limits := L});
        rearm ->
            watcher_loop(W#{tripped := false});
        {'DOWN', MRef, process, Relay, _Reason} ->
            #{session := Session, patterns := P, flags := F, module := Module} = W,
            remove_applied(Session, P, F),
            detach_handlers(maps:get(handlers, W, [])),
            set_duty_bit(maps:get(bit, W), false),
            close_session(Session),
            unload(Module);
        {'DOWN', OwnerRef, process, _, _} when OwnerRef =:= map_get(owner_ref, W) ->
            %% The Python side is gone. The relay may be stuck behind a flood of
            %% trace messages: everything goes at once, from here.
            #{session := Session, patterns := P, flags := F, module := Module} = W,
            remove_applied(Session, P, F),
            detach_handlers(maps:get(handlers, W, [])),
            exit(Relay, kill),
            set_duty_bit(maps:get(bit, W), false),
            close_session(Session),
            unload(Module)
    after max(0, Next - Now) ->
        watcher_loop(on_time(W))
    end.

on_time(W = #{next_guard := G}) ->
    Now = erlang:monotonic_time(millisecond),
    W1 = case Now >= G of
             true -> reassert((guard(W))#{next_guard := Now + 100});
             false -> W
         end,
    case Now >= maps:get(next_toggle, W1) of
        true -> toggle(Now, W1);
        false -> W1
    end.

%% The duty bit is set for the kept share D of each 100 ms, cleared for the rest.
retune(off, W = #{bit := Bit}) ->
    set_duty_bit(Bit, false),
    W#{duty := 1.0, duty_on := true, next_toggle := infinity, bit := undefined};
retune(D, W = #{bit := Bit}) when D >= 1.0 ->
    set_duty_bit(Bit, true),
    W#{duty := 1.0, duty_on := true, next_toggle := infinity};
retune(D, W = #{duty := Old}) when D =:= Old -> W;
retune(D, W) ->
    toggle(erlang:monotonic_time(millisecond), W#{duty := D, duty_on := false}).

toggle(Now, W = #{duty := D, duty_on := false, bit := Bit}) ->
    set_duty_bit(Bit, true),
    W#{duty_on := true, next_toggle := Now + max(1, round(100 * D))};
toggle(Now, W = #{duty := D, duty_on := true, bit := Bit}) ->
    set_duty_bit(Bit, false),
    W#{duty_on := false, next_toggle := Now + max(1, round(100 * (1 - D)))}.

%% While it keeps all, the bit stays set, even if something else cleared it.
reassert(W = #{tripped := false, bit := Bit, duty_on := true, next_toggle := infinity})
  when is_integer(Bit) ->
    set_duty_bit(Bit, true),
    W;
reassert(W) -> W.

guard(W = #{tripped := true}) -> W;
guard(W = #{relay := Relay, limits := L, patterns := P, flags := F}) ->
    {Queue, RelayMb} = relay_load(Relay),
    Over = [{Name, Value, maps:get(Name, L)}
            || {Name, Value} <- [{max_queue_len, Queue}, {max_relay_memory_mb, RelayMb},
                                 {max_node_memory_mb, erlang:memory(total) div (1024 * 1024)}],
               is_number(maps:get(Name, L, infinity)), Value >= maps:get(Name, L)],
    case {Over, maps:size(P) + maps:size(F) + length(maps:get(handlers, W, []))} of
        {[], _} -> W;
        {_, 0} -> W;
        {[{Reason, Value, Limit} | _], _} ->
            remove_applied(maps:get(session, W), P, F),
            detach_handlers(maps:get(handlers, W, [])),
            Details = #{queue => Queue, relay_memory_mb => RelayMb, value => Value,
                        limit => Limit},
            erlang:send(maps:get(owner, W), {es_stopped, Reason, Details}, [nosuspend]),
            Relay ! {guard_tripped, Reason, Details},
            set_duty_bit(maps:get(bit, W), false),
            W#{tripped := true, patterns := #{}, flags := #{}, next_toggle := infinity,
               bit := undefined, handlers => []}
    end.

%% The relay's queue length, and its memory in MB counted whole.
relay_load(Relay) ->
    case process_info(Relay, [message_queue_len, memory, binary]) of
        [{message_queue_len, Queue}, {memory, Bytes}, {binary, Binaries}] ->
            Held = lists:sum([Size || {_, Size, _} <- Binaries]),
            {Queue, (Bytes + Held) div (1024 * 1024)};
        undefined -> {0, 0}
    end.

%% Deletes and purges this session's copy of the agent, from a process that runs
%% only code of lists and the code server, never this module's, so the purge cannot
%% kill it midway (it kills the watcher, if the watcher has not returned by then).
unload(Module) ->
    spawn(lists, zipwith, [fun erlang:apply/2,
                           [fun timer:sleep/1, fun code:delete/1, fun code:purge/1],
                           [[50], [Module], [Module]]]),
    ok.
