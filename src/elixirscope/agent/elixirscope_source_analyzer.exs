# ElixirScope's source analyzer: run with a local `elixir` on a source tree, before the
# app runs (`elixirscope analyze --source DIR`). Each .ex/.exs file is parsed with
# Code.string_to_quoted (never compiled or run) and summarised as the node analyzer
# summarises debug info, so both feed the same report. It writes the summaries to the
# file named second, as one external term (:erlang.term_to_binary).
#
# What source alone cannot know is left out, not guessed: a module named through
# `use MyAppWeb, :live_view` has the behaviours its `use` lines name, and a call through
# an alias is written with the alias expanded as the file declares it.
defmodule ElixirScope.SourceAnalyzer do
  @moduledoc false

  @not_calls ~w(def defp defmacro defmacrop defmodule defstruct defexception defdelegate
                defguard defguardp defoverridable defimpl defprotocol alias import require use
                case cond if unless with receive try for fn quote unquote __block__ __aliases__
                = == === != !== < > <= >= + - * / <> ++ -- |> . .. :: | & ^ @ {} %{} % <<>>
                and or not && || ! in when __MODULE__ __ENV__ __CALLER__ __DIR__ raise reraise
                throw super)a

  def run(dir, out) do
    files = Path.wildcard(Path.join(dir, "**/*.{ex,exs}"))
    modules = Enum.flat_map(files, &file/1)
    File.write!(out, :erlang.term_to_binary(modules))
  end

  defp file(path) do
    case Code.string_to_quoted(File.read!(path), columns: false, file: path) do
      {:ok, ast} -> modules(ast, nil, path)
      {:error, _} -> []
    end
  end

  defp modules({:defmodule, _, [name, [do: body]]}, parent, path) do
    module = join(parent, name)
    inner = modules(body, module, path)
    [{module, summary(module, body, path)} | inner]
  end

  defp modules({:__block__, _, items}, parent, path),
    do: Enum.flat_map(items, &modules(&1, parent, path))

  defp modules(_, _, _), do: []

  defp join(nil, {:__aliases__, _, parts}), do: Module.concat(parts)
  defp join(parent, {:__aliases__, _, parts}), do: Module.concat([parent | parts])
  defp join(_, name) when is_atom(name), do: name

  defp body_items({:__block__, _, items}), do: items
  defp body_items(item), do: [item]

  defp summary(module, body, path) do
    items = body_items(body)
    aliases = aliases(items)
    behaviours =
      Enum.flat_map(items, fn
        {:use, _, [name | _]} -> [expand(name, aliases, module)]
        {:@, _, [{:behaviour, _, [name]}]} -> [expand(name, aliases, module)]
        _ -> []
      end)

    defs =
      Enum.flat_map(items, fn
        {kind, _, [head | rest]} when kind in [:def, :defp] ->
          case signature(head) do
            {name, args} -> [{kind, name, length(args), rest}]
            nil -> []
          end

        _ ->
          []
      end)

    functions =
      defs
      |> Enum.group_by(fn {_, name, arity, _} -> {name, arity} end)
      |> Enum.map(fn {{name, arity}, clauses} ->
        function(module, name, arity, clauses, aliases)
      end)

    exports =
      for {:def, name, arity, _} <- defs, uniq: true, do: {name, arity}

    %{debug_info: true, behaviours: Enum.uniq(behaviours), exports: exports,
      functions: functions, file: path}
  end

  defp signature({:when, _, [head | _]}), do: signature(head)
  defp signature({name, _, args}) when is_atom(name) and is_list(args), do: {name, args}
  defp signature({name, _, ctx}) when is_atom(name) and is_atom(ctx), do: {name, []}
  defp signature(_), do: nil

  defp aliases(items) do
    Enum.reduce(items, %{}, fn
      {:alias, _, [{:__aliases__, _, parts} | opts]}, acc ->
        as = case opts do
          [[as: {:__aliases__, _, [short]}]] -> short
          _ -> List.last(parts)
        end
        Map.put(acc, as, Module.concat(parts))

      {:alias, _, [{{:., _, [{:__aliases__, _, base}, :{}]}, _, children}]}, acc ->
        Enum.reduce(children, acc, fn {:__aliases__, _, parts}, inner ->
          Map.put(inner, List.last(parts), Module.concat(base ++ parts))
        end)

      _, acc ->
        acc
    end)
  end

  defp expand({:__aliases__, _, [:__MODULE__ | rest]}, _aliases, module),
    do: Module.concat([module | rest])

  defp expand({:__aliases__, _, [first | rest]}, aliases, _module) do
    case aliases do
      %{^first => full} -> Module.concat([full | rest])
      _ -> Module.concat([first | rest])
    end
  end

  defp expand({:__MODULE__, _, _}, _aliases, module), do: module
  defp expand(atom, _aliases, _module) when is_atom(atom), do: atom
  defp expand(_, _, _), do: :dynamic

  defp function(module, name, arity, clauses, aliases) do
    acc = %{calls: %{}, branches: length(clauses) - 1, depth: 0, max: 0, size: 0,
            targets: [], sleeps: 0, receives: 0}
    acc =
      Enum.reduce(clauses, acc, fn {_, _, _, rest}, acc ->
        walk(rest, module, aliases, acc)
      end)

    %{name: name, arity: arity, line: 0, clauses: length(clauses), branches: acc.branches,
      nesting: acc.max, size: acc.size, calls: Map.to_list(acc.calls),
      targets: Enum.uniq(acc.targets), sleeps: acc.sleeps, blocking: [],
      receives: acc.receives}
  end

  defp nested(acc, fun) do
    depth = acc.depth + 1
    inner = fun.(%{acc | depth: depth, max: max(acc.max, depth)})
    %{inner | depth: acc.depth}
  end

  defp walk(list, m, a, acc) when is_list(list), do: Enum.reduce(list, acc, &walk(&1, m, a, &2))

  defp walk({branch, _, [subject, [do: clauses]]}, m, a, acc) when branch in [:case] do
    acc = %{acc | branches: acc.branches + max(length(List.wrap(clauses)) - 1, 0)}
    nested(walk(subject, m, a, acc), &walk(clauses, m, a, &1))
  end

  defp walk({:cond, _, [[do: clauses]]}, m, a, acc) do
    acc = %{acc | branches: acc.branches + max(length(clauses) - 1, 0)}
    nested(acc, &walk(clauses, m, a, &1))
  end

  defp walk({kind, _, [condition, blocks]}, m, a, acc) when kind in [:if, :unless] do
    acc = %{acc | branches: acc.branches + 1}
    nested(walk(condition, m, a, acc), &walk(blocks, m, a, &1))
  end

  defp walk({:receive, _, [blocks]}, m, a, acc) do
    clauses = Keyword.get(blocks, :do, [])
    acc = %{acc | branches: acc.branches + length(List.wrap(clauses)), receives: acc.receives + 1}
    nested(acc, &walk(blocks, m, a, &1))
  end

  defp walk({:with, _, args}, m, a, acc) do
    acc = %{acc | branches: acc.branches + length(args)}
    nested(acc, &walk(args, m, a, &1))
  end

  defp walk({:try, _, [blocks]}, m, a, acc) do
    rescues = length(List.wrap(Keyword.get(blocks, :rescue, []))) +
      length(List.wrap(Keyword.get(blocks, :catch, [])))
    nested(%{acc | branches: acc.branches + rescues}, &walk(blocks, m, a, &1))
  end

  defp walk({op, _, [left, right]}, m, a, acc) when op in [:&&, :||, :and, :or] do
    walk(right, m, a, walk(left, m, a, %{acc | branches: acc.branches + 1, size: acc.size + 1}))
  end

  defp walk({:fn, _, clauses}, m, a, acc), do: nested(acc, &walk(clauses, m, a, &1))

  defp walk({{:., _, [target, fun]}, _, args} = _call, m, a, acc)
       when is_atom(fun) and is_list(args) do
    module = expand(target, a, m)
    acc = note(acc, {module, fun, length(args)}, args, m, a)
    walk(args, m, a, walk(target, m, a, %{acc | size: acc.size + 1}))
  end

  defp walk({fun, _, args}, m, a, acc) when is_atom(fun) and is_list(args) do
    acc = if fun in @not_calls, do: acc, else: note(acc, {m, fun, length(args)}, args, m, a)
    walk(args, m, a, %{acc | size: acc.size + 1})
  end

  defp walk({left, right}, m, a, acc), do: walk(right, m, a, walk(left, m, a, acc))
  defp walk({_, _, args}, m, a, acc) when is_list(args), do: walk(args, m, a, %{acc | size: acc.size + 1})
  defp walk(_, _, _, acc), do: acc

  defp note(acc, {module, fun, _} = mfa, args, m, a) do
    acc = %{acc | calls: Map.update(acc.calls, mfa, 1, &(&1 + 1))}
    acc =
      if module in [GenServer, :gen_server, :gen_statem] and fun in [:call, :cast] and args != [] do
        %{acc | targets: [{fun, target(hd(args), m, a)} | acc.targets]}
      else
        acc
      end

    if mfa in [{Process, :sleep, 1}, {:timer, :sleep, 1}],
      do: %{acc | sleeps: acc.sleeps + 1},
      else: acc
  end

  defp target(name, _m, _a) when is_atom(name), do: name
  defp target({:__MODULE__, _, _}, m, _a), do: m
  defp target({:__aliases__, _, _} = name, m, a), do: expand(name, a, m)
  defp target({:{}, _, [:via, registry, _]}, m, a), do: {:via, expand(registry, a, m)}
  defp target({:global, _}, _m, _a), do: {:global, :dynamic}
  defp target({name, _, args}, _m, _a) when is_atom(name) and is_list(args),
    do: {:local_call, name, length(args)}
  defp target({name, _, ctx}, _m, _a) when is_atom(name) and is_atom(ctx), do: {:var, name}
  defp target(_, _, _), do: :dynamic
end

[dir, out] = System.argv()
ElixirScope.SourceAnalyzer.run(dir, out)
