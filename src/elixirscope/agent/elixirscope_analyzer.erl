%% ElixirScope's code analyzer: compiled on the node for one analysis, then unloaded.
%%
%% Reads each module's debug info where the node keeps it (the beam file's debug_info
%% chunk through its backend: erl_abstract_code for Erlang, elixir_erl for Elixir, so
%% no source checkout is needed) and summarises it in the node: only the summary
%% crosses the wire, never the abstract code. A module without debug info says so,
%% with its exports; nothing is guessed.
%%
%% Per function: clauses, branches (the extra clauses of case, if, receive and try, and
%% each andalso/orelse), deepest nesting of those, size (expression nodes), the calls
%% it makes ({M, F, A}, local ones with this module), the processes it calls or casts
%% to by a name written in the code, and whether it sleeps, blocks on I/O or receives.
-module(elixirscope_analyzer).

-export([analyze/1]).

analyze(Modules) ->
    [analyze_module(M) || M <- Modules, is_atom(M)].

analyze_module(M) ->
    case forms(M) of
        {ok, Forms} ->
            Attrs = [{K, V} || {attribute, _, K, V} <- Forms],
            Behaviours = lists:usort(lists:append(
                [to_list(V) || {K, V} <- Attrs, K =:= behaviour orelse K =:= behavior])),
            Exports = lists:usort(lists:append([V || {export, V} <- Attrs])),
            Names = names(Forms),
            Functions = [resolve(function(M, Name, Arity, Clauses), Names)
                         || {function, _, Name, Arity, Clauses} <- Forms,
                            not lists:prefix("-", atom_to_list(Name))],
            {M, #{debug_info => true, behaviours => Behaviours, exports => Exports,
                  functions => Functions, file => file_of(Attrs)}};
        {error, Why} ->
            Exports = case code:is_loaded(M) of
                          false -> [];
                          _ -> catch M:module_info(exports)
                      end,
            {M, #{debug_info => false, reason => Why,
                  exports => if is_list(Exports) -> Exports; true -> [] end}}
    end.

%% Local functions that name a process: one clause whose value is written in the code
%% (def via(id), do: {:via, Registry, {Bank.Registry, id}}).
names(Forms) ->
    maps:from_list([{{F, A}, Target}
                    || {function, _, F, A, [{clause, _, _, [], Body}]} <- Forms,
                       Target <- [target(lists:last(Body))], is_process_name(Target)]).

is_process_name(Name) when is_atom(Name) -> Name =/= dynamic;
is_process_name({via, _, _}) -> true;
is_process_name({global, _}) -> true;
is_process_name(_) -> false.

resolve(Function = #{targets := Targets}, Names) ->
    Function#{targets := lists:usort([{Op, case T of
                                               {local_call, F, A} -> maps:get({F, A}, Names, T);
                                               _ -> T
                                           end} || {Op, T} <- Targets])}.

to_list(V) when is_list(V) -> V;
to_list(V) -> [V].

file_of(Attrs) ->
    case lists:keyfind(file, 1, Attrs) of
        {file, {File, _}} -> list_to_binary(File);
        _ -> nil
    end.

forms(M) ->
    Beam = case code:which(M) of
               File when is_list(File) -> File;
               _ ->
                   case code:get_object_code(M) of
                       {M, Bin, _} -> Bin;
                       error -> none
                   end
           end,
    case Beam of
        none -> {error, not_found};
        _ ->
            case catch beam_lib:chunks(Beam, [debug_info]) of
                {ok, {M, [{debug_info, {debug_info_v1, Backend, Data}}]}} ->
                    case catch Backend:debug_info(erlang_v1, M, Data, []) of
                        {ok, Forms} -> {ok, Forms};
                        %% erlc without +debug_info keeps an empty chunk.
                        {error, missing} -> {error, no_debug_info};
                        Other -> {error, {backend, short(Other)}}
                    end;
                {ok, {M, [{debug_info, no_debug_info}]}} -> {error, no_debug_info};
                {ok, {M, [{debug_info, _}]}} -> {error, unknown_debug_info};
                {error, beam_lib, {missing_chunk, _, _}} -> {error, no_debug_info};
                Other -> {error, short(Other)}
            end
    end.

short({error, beam_lib, {Reason, _}}) -> Reason;
short({error, Reason}) -> Reason;
short(Other) when is_atom(Other) -> Other;
short(_) -> unreadable.

-record(acc, {calls = #{}, branches = 0, depth = 0, max_depth = 0, size = 0,
              targets = [], sleeps = 0, blocking = [], receives = 0}).

function(M, Name, Arity, Clauses) ->
    Acc0 = #acc{branches = length(Clauses) - 1},
    Acc = lists:foldl(fun({clause, _, Head, Guards, Body}, A) ->
                              walk(Body, M, walk(Guards, M, walk(Head, M, A)))
                      end, Acc0, Clauses),
    Line = case Clauses of
               [{clause, Anno, _, _, _} | _] -> erl_anno:line(Anno);
               _ -> 0
           end,
    #{name => Name, arity => Arity, line => Line, clauses => length(Clauses),
      branches => Acc#acc.branches, nesting => Acc#acc.max_depth, size => Acc#acc.size,
      calls => maps:to_list(Acc#acc.calls), targets => lists:usort(Acc#acc.targets),
      sleeps => Acc#acc.sleeps, blocking => lists:usort(Acc#acc.blocking),
      receives => Acc#acc.receives}.

walk(List, M, A) when is_list(List) -> lists:foldl(fun(E, Acc) -> walk(E, M, Acc) end, A, List);
walk({call, _, {remote, _, {atom, _, Mod}, {atom, _, F}}, Args} = Call, M, A) ->
    A1 = note_call({Mod, F, length(Args)}, Args, Call, A),
    walk(Args, M, A1#acc{size = A1#acc.size + 1});
walk({call, _, {atom, _, F}, Args}, M, A) ->
    A1 = note_call({M, F, length(Args)}, Args, none, A),
    walk(Args, M, A1#acc{size = A1#acc.size + 1});
walk({Kind, _, Expr, Clauses}, M, A) when Kind =:= 'case' ->
    nested(fun(Acc) -> walk(Clauses, M, walk(Expr, M, Acc)) end,
           A#acc{branches = A#acc.branches + max(0, length(Clauses) - 1)});
walk({'if', _, Clauses}, M, A) ->
    nested(fun(Acc) -> walk(Clauses, M, Acc) end,
           A#acc{branches = A#acc.branches + max(0, length(Clauses) - 1)});
walk({'receive', _, Clauses}, M, A) ->
    nested(fun(Acc) -> walk(Clauses, M, Acc) end,
           A#acc{branches = A#acc.branches + max(0, length(Clauses) - 1),
                 receives = A#acc.receives + 1});
walk({'receive', _, Clauses, Timeout, After}, M, A) ->
    nested(fun(Acc) -> walk(After, M, walk(Timeout, M, walk(Clauses, M, Acc))) end,
           A#acc{branches = A#acc.branches + length(Clauses),
                 receives = A#acc.receives + 1});
walk({'try', _, Body, Of, Catch, After}, M, A) ->
    nested(fun(Acc) -> walk([Body, Of, Catch, After], M, Acc) end,
           A#acc{branches = A#acc.branches + length(Of) + length(Catch)});
walk({op, _, Op, L, R}, M, A) when Op =:= 'andalso'; Op =:= 'orelse' ->
    walk(R, M, walk(L, M, A#acc{branches = A#acc.branches + 1, size = A#acc.size + 1}));
walk({'fun', _, {clauses, Clauses}}, M, A) ->
    nested(fun(Acc) -> walk(Clauses, M, Acc) end, A);
walk({named_fun, _, _, Clauses}, M, A) ->
    nested(fun(Acc) -> walk(Clauses, M, Acc) end, A);
walk({clause, _, Head, Guards, Body}, M, A) ->
    walk(Body, M, walk(Guards, M, walk(Head, M, A)));
%% Any other node is {Tag, Anno, Children...}.
walk(Tuple, M, A) when is_tuple(Tuple), tuple_size(Tuple) >= 3 ->
    walk(tl(tl(tuple_to_list(Tuple))), M, A#acc{size = A#acc.size + 1});
walk(_, _, A) -> A.

nested(Walk, A) ->
    Depth = A#acc.depth + 1,
    A1 = Walk(A#acc{depth = Depth, max_depth = max(A#acc.max_depth, Depth)}),
    A1#acc{depth = A#acc.depth}.

note_call(Mfa, Args, Call, A) ->
    Calls = maps:update_with(Mfa, fun(N) -> N + 1 end, 1, A#acc.calls),
    A1 = A#acc{calls = Calls},
    A2 = case {Mfa, Args} of
             {{Mod, F, _}, [Target | _]} when (Mod =:= gen_server orelse Mod =:= 'Elixir.GenServer'
                                               orelse Mod =:= gen_statem),
                                              (F =:= call orelse F =:= cast) ->
                 A1#acc{targets = [{F, target(Target)} | A1#acc.targets]};
             _ -> A1
         end,
    A3 = case Mfa of
             {timer, sleep, 1} -> A2#acc{sleeps = A2#acc.sleeps + 1};
             {'Elixir.Process', sleep, 1} -> A2#acc{sleeps = A2#acc.sleeps + 1};
             _ -> A2
         end,
    case blocking(Mfa) of
        true when Call =/= none -> A3#acc{blocking = [Mfa | A3#acc.blocking]};
        _ -> A3
    end.

%% A name written in the code: an atom, {Name, Node}, {global, Name}, {via, M, Key}.
target({atom, _, Name}) -> Name;
target({tuple, _, [{atom, _, global}, {atom, _, Name}]}) -> {global, Name};
target({tuple, _, [{atom, _, Name}, _Node]}) -> {Name, node};
target({tuple, _, [{atom, _, via}, {atom, _, Registry}, Key]}) ->
    case Key of
        {tuple, _, [{atom, _, Name} | _]} -> {via, Registry, Name};
        {atom, _, Name} -> {via, Registry, Name};
        _ -> {via, Registry, dynamic}
    end;
target({var, _, Var}) -> {var, Var};
target({call, _, {atom, _, F}, Args}) -> {local_call, F, length(Args)};
target({call, _, {remote, _, {atom, _, M}, {atom, _, F}}, _}) -> {call, M, F};
target(_) -> dynamic.

blocking({M, F, _}) ->
    lists:member(M, [file, gen_tcp, gen_udp, httpc, os, 'Elixir.File', 'Elixir.System',
                     'Elixir.Port', ssl, inet])
        andalso not lists:member(F, [module_info, format_error, timestamp, type, getenv,
                                     system_time, monotonic_time, os_time, pid, join,
                                     basename, dirname, extension]).
