%% The workload the agent benchmarks trace, and the instruments they measure it with.
%%
%% Compiled with erlc by benchmarks/_beam_workload.py and loaded on the benchmark
%% node with code:load_binary/3. Everything timed here is timed inside the node, so
%% the figures do not include the distribution round trip.
%%
%%   work/1              the traced function
%%   timed_calls/1       N calls in a fresh process, timed
%%   spawn_worker/1      a process that waits for `go`, makes N calls of work/1 under
%%                       timer:tc and keeps the microseconds until asked for them
%%   bare_round/1        the baseline: the same worker traced into a process that only
%%                       counts the trace messages, set up and removed in one call
%%   flood_start/1       worker processes calling work/1 in tight loops until stopped
%%   sampler_start/2     a high-priority process sampling erlang:memory(total), the
%%                       relay's queue and memory, and whether work/1 is still traced
%%   trace_state/0       what tracing is left on the node
-module(es_bench_workload).

-export([work/1, loop/1, timed_calls/1]).
-export([spawn_worker/1, await_worker/2]).
-export([bare_round/1]).
-export([flood_start/1, flood_stop/1]).
-export([sampler_start/2, sampler_stop/1]).
-export([trace_state/1]).

-define(MFA, {es_bench_workload, work, 1}).

work(X) -> X + 1.

%% N calls of work/1, each an external call so the compiler can never inline it and
%% a global or local trace pattern sees every one.
loop(0) -> ok;
loop(N) ->
    _ = es_bench_workload:work(N),
    loop(N - 1).

%% Microseconds for N calls in a fresh process (traced if tracing is set on new
%% processes, as the agent does for a function trace).
timed_calls(N) ->
    W = spawn_worker(N),
    W ! go,
    await_worker(W, 60000).

%% ---------------------------------------------------------------------------------
%% Workers

spawn_worker(N) ->
    spawn(fun() ->
                  receive go -> ok end,
                  {Us, ok} = timer:tc(fun() -> loop(N) end),
                  receive {es_result, From} -> From ! {es_result, self(), Us} end
          end).

await_worker(W, Timeout) ->
    MRef = monitor(process, W),
    W ! {es_result, self()},
    receive
        {es_result, W, Us} ->
            demonitor(MRef, [flush]),
            Us;
        {'DOWN', MRef, process, W, Reason} ->
            {error, {worker_down, Reason}}
    after Timeout ->
        demonitor(MRef, [flush]),
        exit(W, kill),
        {error, timeout}
    end.

%% ---------------------------------------------------------------------------------
%% The baseline: a tracer process that only counts

%% One round of N traced calls into a counting tracer. Returns the worker's
%% microseconds, what the counter counted, and the nanoseconds from `go` to the
%% counter receiving the N-th message (the VM's delivery rate to a trivial tracer).
%% Pattern and flags are removed before it returns, and the counter is killed.
bare_round(N) ->
    Counter = spawn(fun() -> count(0, N) end),
    W = spawn_worker(N),
    1 = erlang:trace(W, true, [call, {tracer, Counter}, monotonic_timestamp]),
    1 = erlang:trace_pattern(?MFA, true, [local]),
    T0 = erlang:monotonic_time(nanosecond),
    W ! go,
    Us = await_worker(W, 60000),
    _ = erlang:trace_pattern(?MFA, false, [local]),
    %% The worker is gone (its flags with it) once it has answered; make sure.
    catch erlang:trace(W, false, [all]),
    {Count, Done} = await_count(Counter, N, 60000),
    exit(Counter, kill),
    Elapsed = case Done of
                  undefined -> undefined;
                  _ -> Done - T0
              end,
    #{us => Us, counted => Count, delivery_ns => Elapsed}.

count(N, Target) ->
    receive
        {es_wait, From} ->
            From ! {es_counted, N, undefined},
            count(N, Target);
        _ when N + 1 =:= Target ->
            counted(Target, erlang:monotonic_time(nanosecond));
        _ ->
            count(N + 1, Target)
    end.

counted(N, Done) ->
    receive
        {es_wait, From} ->
            From ! {es_counted, N, Done},
            counted(N, Done);
        _ ->
            counted(N + 1, Done)
    end.

%% Waits until the counter has seen Target messages (or Timeout ms pass).
await_count(Counter, Target, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    await_count_loop(Counter, Target, Deadline).

await_count_loop(Counter, Target, Deadline) ->
    Counter ! {es_wait, self()},
    receive
        {es_counted, N, Done} when Done =/= undefined -> {N, Done};
        {es_counted, N, undefined} ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> {N, undefined};
                false ->
                    timer:sleep(1),
                    await_count_loop(Counter, Target, Deadline)
            end
    end.

%% ---------------------------------------------------------------------------------
%% The flood

%% K processes calling work/1 as fast as they can, checking for `stop` every
%% thousand calls. Returns the start time (monotonic microseconds) and the pids.
flood_start(K) ->
    T0 = erlang:monotonic_time(microsecond),
    {T0, [spawn(fun flood_loop/0) || _ <- lists:seq(1, K)]}.

flood_loop() ->
    loop(1000),
    receive
        stop -> ok
    after 0 ->
        flood_loop()
    end.

flood_stop(Pids) ->
    [exit(P, kill) || P <- Pids],
    ok.

%% ---------------------------------------------------------------------------------
%% The sampler

%% Every IntervalMs: {MonotonicUs, erlang:memory(total), RelayQueueLen, RelayMemory,
%% Traced} where Traced says whether work/1 still has a trace pattern. The samples
%% are returned by sampler_stop/1, oldest first.
sampler_start(IntervalMs, Relay) ->
    spawn(fun() ->
                  process_flag(priority, high),
                  sample_loop(IntervalMs, Relay, [])
          end).

sample_loop(IntervalMs, Relay, Acc) ->
    Sample = sample(Relay),
    receive
        {es_stop, From} -> From ! {es_samples, self(), lists:reverse([Sample | Acc])}
    after IntervalMs ->
        sample_loop(IntervalMs, Relay, [Sample | Acc])
    end.

sample(Relay) ->
    {Queue, Mem} = case is_pid(Relay) andalso
                       process_info(Relay, [message_queue_len, memory]) of
                       [{message_queue_len, Q}, {memory, M}] -> {Q, M};
                       _ -> {0, 0}
                   end,
    Traced = case erlang:trace_info(?MFA, traced) of
                 {traced, false} -> false;
                 _ -> true
             end,
    {erlang:monotonic_time(microsecond), erlang:memory(total), Queue, Mem, Traced}.

sampler_stop(Sampler) ->
    MRef = monitor(process, Sampler),
    Sampler ! {es_stop, self()},
    receive
        {es_samples, Sampler, Samples} ->
            demonitor(MRef, [flush]),
            Samples;
        {'DOWN', MRef, process, Sampler, Reason} ->
            {error, Reason}
    after 10000 ->
        {error, timeout}
    end.

%% ---------------------------------------------------------------------------------
%% What tracing is left

%% Flags on new processes, flags on the given (live) processes, and the pattern on
%% work/1 (local and global, with its match specification).
trace_state(Pids) ->
    {flags, New} = erlang:trace_info(new, flags),
    Live = [{P, F} || P <- Pids, {flags, F} <- [catch erlang:trace_info(P, flags)], F =/= []],
    {traced, Traced} = erlang:trace_info(?MFA, traced),
    {match_spec, Ms} = erlang:trace_info(?MFA, match_spec),
    {all, All} = erlang:trace_info(?MFA, all),
    #{new_flags => New, live_flags => Live, traced => Traced, match_spec => Ms,
      info => All}.
