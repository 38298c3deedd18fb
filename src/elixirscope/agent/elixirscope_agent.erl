%% ElixirScope's agent: compiled on the traced node at attach time.
%%
%% The Python side sends this source, with the module name replaced by one that
%% carries the ElixirScope version, and compiles it from forms (erl_scan, erl_parse,
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
%%            its heap limit), the watcher removes all of it and unloads this module.
%%
%% Safety trade-offs, where they are decided:
%%   * Limits are counted in the relay, on events it keeps (after sampling). A flood
%%     the relay cannot keep up with shows as a growing mailbox, so max_queue_len
%%     and the relay's max_heap_size are the limits that stop it. Adaptive sampling
%%     lowers the kept share as the kept rate nears max_events_per_second, so the
%%     rate breaker trips only when sampling has reached its floor.
%%   * Call tracing of a process ("calls" in trace_process) needs patterns on every
%%     exported function of the node (trace_pattern({'_','_','_'}, ...)); every call
%%     in every process then passes a breakpoint check. It is removed with the trace.
%%   * Payloads are encoded with term_to_binary in the relay and capped at
%%     max_term_bytes; a bigger term keeps its outer shape (a map keeps its first
%%     entries, a list its first elements, a binary its first bytes) and the record
%%     is flagged as truncated with the original size.
-module(elixirscope_agent).

-export([start/2, request/2, request/3, capabilities/0, conflicts/1]).
-export([relay_init/3, watcher_init/2]).

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
    buf = [], buf_n = 0, buf_bytes = 0, buf_refs = #{},
    seq = 0,
    received = 0, kept = 0, dropped = 0, sampled_out = 0, truncated = 0,
    window_start = 0, window_kept = 0, window_rate = 0,
    adaptive = 1.0,
    started_at = 0,
    tripped = false,
    applied_patterns = #{},
    applied_flags = #{},
    flush_timer = undefined
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
    Name = case process_info(Tracer, registered_name) of
               {registered_name, N} -> atom_to_list(N);
               _ -> pid_to_list(Tracer)
           end,
    Init = case process_info(Tracer, dictionary) of
               {dictionary, D} -> proplists:get_value('$initial_call', D);
               _ -> undefined
           end,
    iolist_to_binary(io_lib:format("process ~s (~p)", [Name, Init]));
describe_tracer(Tracer) ->
    iolist_to_binary(io_lib:format("tracer ~p", [Tracer])).

default_limits() ->
    #{max_events_per_second => 50000,
      max_events => 5000000,
      max_duration_s => 600,
      max_queue_len => 50000,
      max_term_bytes => 4096,
      max_node_memory_mb => infinity,
      max_cpu_percent => infinity,
      max_relay_heap_mb => 256,
      flush_interval_ms => 20,
      batch_events => 2000,
      min_sample_rate => 0.01}.

limits(Given, Base) ->
    maps:merge(Base, maps:with(maps:keys(Base), Given)).

%% ---------------------------------------------------------------------------------
%% The relay

relay_init(Parent, Ref, {Owner, Limits, Options}) ->
    process_flag(trap_exit, true),
    set_heap_limit(Limits),
    Me = self(),
    Module = this_module(),
    Watcher = spawn(fun() -> watcher_init(Me, Module) end),
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
            relay_loop(on_trace(Msg, St));
        {es_req, From, Ref, Request} ->
            {Reply, St1} = try handle_request(Request, St)
                           catch Class:Reason:Stack ->
                                   {{error, {internal, Class, Reason, Stack}}, St}
                           end,
            From ! {Ref, Reply},
            relay_loop(St1);
        flush ->
            relay_loop(flush(St#st{flush_timer = undefined}));
        check ->
            erlang:send_after(100, self(), check),
            relay_loop(check_limits(St));
        {stop_trace_after, TRef} ->
            {_, St1} = handle_request({stop_trace, TRef}, St),
            relay_loop(St1);
        {'DOWN', MRef, process, _, _} when MRef =:= St#st.owner_mon ->
            %% The Python side is gone (it exited, was killed, or the network dropped).
            remove_all(St),
            exit(normal);
        {'EXIT', _, _} ->
            relay_loop(St);
        _Other ->
            relay_loop(St)
    end.

%% ---------------------------------------------------------------------------------
%% Trace messages -> records

on_trace(_Msg, St = #st{tripped = Tripped}) when Tripped =/= false ->
    St#st{received = St#st.received + 1};
on_trace(Msg, St0) ->
    St = St0#st{received = St0#st.received + 1},
    case classify(Msg) of
        {call, Pid, {M, F, Args}, Caller, Ts} ->
            Mfa = {M, F, length(Args)},
            {{Rate, WantArgs, Refs}, Routed} = call_route(Mfa, Pid, St),
            case keep(Pid, Rate, Routed) of
                {false, St1} -> sampled_out(Refs, St1);
                {true, St1} ->
                    Payload = if WantArgs -> Args; true -> [] end,
                    {CallerIdx, St2} = case Caller of
                                           none -> {0, St1};
                                           _ -> caller_index(Caller, St1)
                                       end,
                    Flags = if Caller =:= none -> 0; true -> 4 end,
                    record(1, Flags, Pid, Ts, Mfa, CallerIdx, Payload, Refs, St2)
            end;
        {Kind, Pid, Mfa, Value, Ts} when Kind =:= return; Kind =:= exception ->
            {{_, _, Refs}, Routed} = call_route(Mfa, Pid, St),
            case pop(Pid, Routed) of
                {false, St1} -> sampled_out(Refs, St1);
                {true, St1} ->
                    Code = if Kind =:= return -> 2; true -> 3 end,
                    record(Code, 0, Pid, Ts, Mfa, 0, Value, Refs, St1)
            end;
        {return_to, Pid, Mfa, Ts} ->
            %% Returns into untraced code (the caller of the outermost traced call)
            %% say nothing the return itself did not.
            case call_route(Mfa, Pid, St) of
                {{_, _, []}, Routed} -> Routed;
                {{_, _, Refs}, Routed} -> record(16, 0, Pid, Ts, Mfa, 0, [], Refs, Routed)
            end;
        {Code, Pid, Other, Mfa, Value, Ts} ->
            St1 = adopt_on_spawn(Code, Pid, Other, St),
            case membership(Pid, St1) of
                {rejected, TRef} -> maybe_forget(Code, Pid, sampled_out([TRef], St1));
                Refs ->
                    {OtherIdx, Flags, Payload, St2} = other(Other, Value, St1),
                    St3 = maybe_forget(Code, Pid, St2),
                    record(Code, Flags, Pid, Ts, Mfa, OtherIdx, Payload, Refs, St3)
            end;
        ignore ->
            St
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
classify({trace_ts, Pid, call, Mfa, Ts}) -> {call, Pid, Mfa, none, Ts};
classify({trace_ts, Pid, call, Mfa, Caller, Ts}) -> {call, Pid, Mfa, Caller, Ts};
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
other(Name, Value, St) -> {0, 2, {Name, Value}, St}.

caller_index({M, F, A}, St) when is_atom(M), is_atom(F), is_integer(A) ->
    mfa_index({M, F, A}, St);
caller_index(_, St) ->
    {0, St}.

%% Sampling of calls: the decision for a call is remembered on the process's stack
%% so its return or exception is kept or dropped with it.
keep(Pid, Rate, St) ->
    Keep = Rate >= 1.0 andalso St#st.adaptive >= 1.0
        orelse rand:uniform() < Rate * St#st.adaptive,
    Stacks = St#st.stacks,
    Stack = maps:get(Pid, Stacks, []),
    {Keep, St#st{stacks = Stacks#{Pid => [Keep | Stack]}}}.

pop(Pid, St) ->
    Stacks = St#st.stacks,
    case maps:get(Pid, Stacks, []) of
        [Keep | Rest] -> {Keep, St#st{stacks = Stacks#{Pid => Rest}}};
        [] -> {true, St}
    end.

maybe_forget(9, Pid, St) ->
    St#st{stacks = maps:remove(Pid, St#st.stacks),
          members = maps:remove(Pid, St#st.members)};
maybe_forget(_, _, St) -> St.

%% A child spawned by a member of a process trace with include_children inherits
%% the trace flags through set_on_spawn. With a sample rate below 1 only that share
%% stays traced; the others are untraced at once and what they still emitted counts
%% as sampled out. The parent's spawn event and the child's spawned event come from
%% two processes in either order, so whichever arrives first decides.
adopt_on_spawn(7, Parent, Child, St) when is_pid(Child) -> decide(Child, Parent, St);
adopt_on_spawn(8, Child, Parent, St) when is_pid(Parent) -> decide(Child, Parent, St);
adopt_on_spawn(_, _, _, St) -> St.

decide(Child, Parent, St = #st{members = Members}) ->
    case {maps:is_key(Child, Members), maps:get(Parent, Members, undefined)} of
        {false, {rejected, TRef}} ->
            catch tr_process(St#st.session, Child, false, [all]),
            St#st{members = Members#{Child => {rejected, TRef}}};
        {false, undefined} -> St;
        {false, TRef} ->
            case maps:get(TRef, St#st.traces, undefined) of
                #{children := true, child_rate := Rate} ->
                    case Rate >= 1.0 orelse rand:uniform() < Rate of
                        true -> St#st{members = Members#{Child => TRef}};
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
    Matching = [{R, T} || {R, T} <- maps:to_list(St#st.traces), covers(T, M, F, A)],
    case Matching of
        [] -> {1.0, true, []};
        _ -> {lists:max([maps:get(rate, T) || {_, T} <- Matching]),
              lists:any(fun({_, T}) -> maps:get(want_args, T) end, Matching),
              [R || {R, _} <- Matching]}
    end.

covers(#{kind := module, module := M, functions := Fs}, M, F, A) ->
    lists:member({F, A}, Fs);
covers(#{kind := function, module := M, function := F, arity := Ar}, M, F, A) ->
    Ar =:= '_' orelse Ar =:= A;
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

%% One record: <<Kind:8, Flags:8, Pid:32, Ts:64/signed, Mfa:32, Other:32,
%%               OrigSize:32, Len:32, Payload:Len/binary>>
%% Flags: 1 payload truncated, 2 payload is {Target, Value} (target not a pid),
%%        4 Other is the caller's MFA index.
record(Kind, Flags0, Pid, Ts, Mfa, Other, Value, Refs, St0) ->
    {PidIdx, St1} = pid_index(Pid, St0),
    {MfaIdx, St2} = case Mfa of
                        none -> {0, St1};
                        _ -> mfa_index(Mfa, St1)
                    end,
    {Payload, OrigSize, Truncated} = encode_payload(Value, maps:get(max_term_bytes, St2#st.limits)),
    Flags = if Truncated -> Flags0 bor 1; true -> Flags0 end,
    Len = byte_size(Payload),
    Rec = <<Kind:8, Flags:8, PidIdx:32, Ts:64/signed, MfaIdx:32, Other:32,
            OrigSize:32, Len:32, Payload/binary>>,
    N = St2#st.buf_n + 1,
    Bytes = St2#st.buf_bytes + 30 + Len,
    BufRefs = lists:foldl(fun(R, Acc) -> Acc#{R => maps:get(R, Acc, 0) + 1} end,
                          St2#st.buf_refs, Refs),
    St3 = St2#st{buf = [Rec | St2#st.buf], buf_n = N, buf_bytes = Bytes, buf_refs = BufRefs,
                 kept = St2#st.kept + 1, window_kept = St2#st.window_kept + 1,
                 truncated = St2#st.truncated + (Flags band 1)},
    Limits = St3#st.limits,
    if N >= map_get(batch_events, Limits); Bytes >= 262144 ->
           flush(St3);
       St3#st.flush_timer =:= undefined ->
           T = erlang:send_after(map_get(flush_interval_ms, Limits), self(), flush),
           St3#st{flush_timer = T};
       true ->
           St3
    end.

encode_payload(Value, Max) ->
    Bin = term_to_binary(Value),
    Size = byte_size(Bin),
    if Size =< Max -> {Bin, Size, false};
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
             Stats, iolist_to_binary(lists:reverse(St#st.buf))},
    Sent = St#st{seq = Seq, buf = [], buf_n = 0, buf_bytes = 0, buf_refs = #{},
                 new_pids = [], new_mfas = []},
    Counted = fun(Key) ->
                      maps:fold(fun(R, N, Acc) -> bump_trace(R, Key, N, Acc) end,
                                St#st.traces, St#st.buf_refs)
              end,
    case erlang:send(St#st.owner, Batch, [nosuspend]) of
        ok -> Sent#st{traces = Counted(captured)};
        _Busy ->
            %% The index entries of a dropped batch are sent again with the next one.
            Sent#st{dropped = St#st.dropped + St#st.buf_n, traces = Counted(dropped),
                    new_pids = St#st.new_pids, new_mfas = St#st.new_mfas}
    end.

cancel_flush(St = #st{flush_timer = undefined}) -> St;
cancel_flush(St = #st{flush_timer = T}) ->
    erlang:cancel_timer(T),
    receive flush -> ok after 0 -> ok end,
    St#st{flush_timer = undefined}.

%% ---------------------------------------------------------------------------------
%% Limits and the circuit breaker

check_limits(St = #st{tripped = Tripped}) when Tripped =/= false -> St;
check_limits(St0) ->
    Now = erlang:monotonic_time(millisecond),
    St = adapt(Now, St0),
    L = St#st.limits,
    {message_queue_len, Queue} = process_info(self(), message_queue_len),
    Checks = [
        {max_duration_s, fun(Max) -> (Now - St#st.started_at) >= Max * 1000 end},
        {max_events, fun(Max) -> St#st.kept >= Max end},
        {max_queue_len, fun(Max) -> Queue >= Max end},
        {max_events_per_second,
         fun(Max) -> St#st.window_rate > Max andalso
                         St#st.adaptive =< map_get(min_sample_rate, L) end},
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

%% Adaptive sampling, once per rate window (one second): halve the kept share when
%% the kept rate passes 80% of the limit, double it back when it falls below 40%.
adapt(Now, St) when Now - St#st.window_start < 1000 -> St;
adapt(Now, St) ->
    Elapsed = max(1, Now - St#st.window_start),
    Rate = St#st.window_kept * 1000 div Elapsed,
    L = St#st.limits,
    Adaptive = case maps:get(max_events_per_second, L) of
                   infinity -> 1.0;
                   Max when Rate > Max * 0.8 -> max(map_get(min_sample_rate, L),
                                                    St#st.adaptive / 2);
                   Max when Rate < Max * 0.4 -> min(1.0, St#st.adaptive * 2);
                   _ -> St#st.adaptive
               end,
    St#st{window_start = Now, window_kept = 0, window_rate = Rate, adaptive = Adaptive}.

trip(Reason, St0) ->
    St1 = flush(St0),
    St = remove_all(St1),
    Traces = maps:map(fun(_, T) -> T#{status => {tripped, Reason}} end, St#st.traces),
    Counters = counters(St),
    St#st.owner ! {es_stopped, Reason, Counters},
    St#st{tripped = Reason, traces = Traces}.

counters(St) ->
    #{received => St#st.received, kept => St#st.kept, dropped => St#st.dropped,
      sampled_out => St#st.sampled_out, truncated => St#st.truncated,
      adaptive_rate => St#st.adaptive, rate => St#st.window_rate, batches => St#st.seq}.

%% ---------------------------------------------------------------------------------
%% Requests

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
                    {Reply, St1} = add_trace(TRef, T, St),
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
            St1 = drop_members(TRef, flush(St)),
            St2 = apply_state(St1#st{traces = Rest,
                                     routes_version = St1#st.routes_version + 1}),
            {{ok, summary(TRef, T#{status => stopped})}, St2}
    end;
handle_request(list_traces, St) ->
    {[summary(R, T) || {R, T} <- maps:to_list(St#st.traces)], St};
handle_request({set_limits, New}, St) ->
    Limits = limits(New, St#st.limits),
    set_heap_limit(Limits),
    {{ok, Limits}, St#st{limits = Limits}};
handle_request(emergency_stop, St0) ->
    St = remove_all(flush(St0)),
    Stopped = [summary(R, T#{status => stopped}) || {R, T} <- maps:to_list(St#st.traces)],
    {{ok, Stopped}, St#st{traces = #{}, routes_version = St#st.routes_version + 1}};
handle_request(reset_breaker, St) ->
    {ok, St#st{tripped = false, traces = #{}, adaptive = 1.0,
               started_at = erlang:monotonic_time(millisecond)}};
handle_request(status, St) ->
    {#{counters => counters(St), limits => St#st.limits, tripped => St#st.tripped,
       patterns => maps:size(St#st.applied_patterns),
       flags => St#st.applied_flags}, St};
handle_request(flush, St) ->
    {ok, flush(St)};
handle_request(shutdown, St) ->
    St1 = remove_all(flush(St)),
    self() ! {'DOWN', St1#st.owner_mon, process, St1#st.owner, shutdown},
    {ok, St1};
handle_request(Other, St) ->
    {{error, {unknown_request, Other}}, St}.

trace_spec(module, #{module := M, level := Level, only := Only, exclude := Exclude,
                    rate := Rate}) ->
    case module_functions(M, Level) of
        {error, _} = E -> E;
        {ok, All} ->
            Fs = select(All, Only, Exclude),
            Ms = level_ms(Level),
            Where = case Level of full -> local; _ -> global end,
            Flags = [call] ++ case Level of full -> [return_to]; _ -> [] end,
            {ok, #{kind => module, module => M, functions => Fs, level => Level,
                   rate => float(Rate), want_args => true,
                   patterns => [{{M, F, A}, Where, Ms} || {F, A} <- Fs],
                   flags => #{all => Flags}}}
    end;
trace_spec(function, #{module := M, function := F, arity := A, capture := Capture,
                       match := Match, rate := Rate}) ->
    case function_arities(M, F, A) of
        {error, _} = E -> E;
        {ok, Arities} ->
            Ms = case Match of
                     undefined -> capture_ms(Capture);
                     _ -> Match
                 end,
            {ok, #{kind => function, module => M, function => F, arity => A,
                   rate => float(Rate), want_args => lists:member(args, Capture),
                   patterns => [{{M, F, Ar}, local, Ms} || Ar <- Arities],
                   flags => #{all => [call]}}}
    end;
trace_spec(process, #{target := Target, include := Include, children := Children,
                      rate := Rate}) ->
    case resolve_pid(Target) of
        {error, _} = E -> E;
        {ok, Pid} ->
            Flags = lists:usort(lists:append([include_flags(I) || I <- Include]) ++
                                [set_on_spawn || Children]),
            Patterns = case lists:member(calls, Include) of
                           true -> [{{'_', '_', '_'}, global, level_ms(detailed)}];
                           false -> []
                       end,
            {ok, #{kind => process, pid => Pid, rate => 1.0, want_args => true,
                   children => Children, child_rate => float(Rate), include => Include,
                   patterns => Patterns, flags => #{Pid => Flags}}}
    end;
trace_spec(Kind, _) ->
    {error, {bad_trace_spec, Kind}}.

%% Tracers other than us on what this trace would touch.
others_tracing(T, St) ->
    Mine = St#st.applied_patterns,
    Pids = [P || P <- maps:keys(maps:get(flags, T)), is_pid(P)],
    Mfas = [Mfa || {Mfa = {_, F, A}, _, _} <- maps:get(patterns, T), is_atom(F), F =/= '_',
                   is_integer(A), not maps:is_key(Mfa, Mine)],
    conflicts([{process, P} || P <- Pids] ++ [{function, M} || M <- Mfas]).

add_trace(_TRef, _T, St = #st{tripped = Tripped}) when Tripped =/= false ->
    {{error, {tripped, Tripped}}, St};
add_trace(TRef, T, St) ->
    Now = erlang:system_time(millisecond),
    T1 = T#{status => running, started_at => Now, captured => 0, dropped => 0,
            sampled_out => 0},
    Members = case T of
                  #{kind := process, pid := Root} -> (St#st.members)#{Root => TRef};
                  _ -> St#st.members
              end,
    St1 = St#st{traces = (St#st.traces)#{TRef => T1}, members = Members,
                routes_version = St#st.routes_version + 1},
    {ok, apply_state(St1)}.

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

summary(TRef, T) ->
    maps:with([ref, kind, module, function, arity, pid, level, rate, child_rate, status,
               started_at, children, include, captured, dropped, sampled_out],
              T#{ref => TRef}).

level_ms(basic) -> [{'_', [], []}];
level_ms(detailed) -> [{'_', [], [{exception_trace}]}];
level_ms(full) -> [{'_', [], [{exception_trace}, {message, {caller}}]}].

capture_ms(Capture) ->
    Returns = lists:member(returns, Capture) orelse lists:member(exceptions, Capture),
    Caller = lists:member(caller, Capture),
    [{'_', [], [{exception_trace} || Returns] ++ [{message, {caller}} || Caller]}].

include_flags(messages) -> [send, 'receive'];
include_flags(calls) -> [call];
include_flags(lifecycle) -> [procs];
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
    WantPatterns = wanted_patterns(St#st.traces),
    WantFlags = wanted_flags(St#st.traces),
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
    Reapply = case WildcardChanged of
                  true -> lists:sort(fun({A, _}, {B, _}) -> wildcard_first(A, B, Wildcard) end,
                                     maps:to_list(WantPatterns));
                  false -> [P || P = {Mfa, Spec} <- maps:to_list(WantPatterns),
                                 maps:get(Mfa, OldPatterns, none) =/= Spec]
              end,
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
    St#st{applied_patterns = WantPatterns, applied_flags = WantFlags}.

wildcard_first(Wildcard, _, Wildcard) -> true;
wildcard_first(_, Wildcard, Wildcard) -> false;
wildcard_first(A, B, _) -> A =< B.

untrace_self(Session, Watcher) ->
    catch tr_process(Session, self(), false, [all]),
    catch tr_process(Session, Watcher, false, [all]).

wanted_patterns(Traces) ->
    lists:foldl(
      fun({Mfa, Where, Ms}, Acc) ->
              case maps:get(Mfa, Acc, none) of
                  none -> Acc#{Mfa => {Where, Ms}};
                  {W0, Ms0} -> Acc#{Mfa => {stronger_where(W0, Where), richer_ms(Ms0, Ms)}}
              end
      end, #{}, lists:append([maps:get(patterns, T) || T <- maps:values(Traces)])).

stronger_where(local, _) -> local;
stronger_where(_, W) -> W.

richer_ms([{'_', [], A0}], [{'_', [], A1}]) -> [{'_', [], lists:usort(A0 ++ A1)}];
richer_ms(_, Ms) -> Ms.

wanted_flags(Traces) ->
    lists:foldl(
      fun({Target, Flags}, Acc) ->
              Acc#{Target => lists:usort(maps:get(Target, Acc, []) ++ Flags)}
      end, #{}, lists:append([maps:to_list(maps:get(flags, T)) || T <- maps:values(Traces)])).

remove_all(St) ->
    [catch tr_process(St#st.session, P, false, [all])
     || {P, R} <- maps:to_list(St#st.members), not is_tuple(R)],
    remove_applied(St#st.session, St#st.applied_patterns, St#st.applied_flags),
    St#st.watcher ! {applied, #{}, #{}, St#st.session},
    St#st{applied_patterns = #{}, applied_flags = #{}, members = #{}}.

remove_applied(Session, Patterns, Flags) ->
    [begin
         catch tr_function(Session, Mfa, false, [local]),
         catch tr_function(Session, Mfa, false, [global])
     end || Mfa <- maps:keys(Patterns)],
    [catch tr_process(Session, Target, false, [monotonic_timestamp | Fs])
     || {Target, Fs} <- maps:to_list(Flags)],
    ok.

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

watcher_init(Relay, Module) ->
    MRef = monitor(process, Relay),
    watcher_loop(Relay, MRef, Module, #{}, #{}, legacy).

watcher_loop(Relay, MRef, Module, Patterns, Flags, Session) ->
    receive
        {applied, P, F, S} ->
            watcher_loop(Relay, MRef, Module, P, F, S);
        {'DOWN', MRef, process, Relay, _Reason} ->
            remove_applied(Session, Patterns, Flags),
            close_session(Session),
            unload(Module)
    end.

%% Deletes and purges this module, unless another session still runs it, from a
%% process that runs only code of lists and the code server, never this module's,
%% so the purge cannot kill it midway.
unload(Module) ->
    Me = self(),
    Users = [P || P <- processes(), P =/= Me, runs(P, Module)],
    case Users of
        [] ->
            spawn(lists, zipwith, [fun erlang:apply/2,
                                   [fun timer:sleep/1, fun code:delete/1, fun code:purge/1],
                                   [[50], [Module], [Module]]]),
            ok;
        _ -> ok
    end.

runs(Pid, Module) ->
    case process_info(Pid, current_function) of
        {current_function, {Module, _, _}} -> true;
        _ -> false
    end.
