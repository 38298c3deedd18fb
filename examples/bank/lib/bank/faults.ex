defmodule Bank.AccountCorrupted do
  defexception [:account_id]

  @impl true
  def message(%{account_id: id}), do: "account #{inspect(id)} is corrupted"
end

defmodule Bank.Faults do
  @moduledoc """
  Fault switches, flipped at run time (by hand, by `Bank.Demo` or over rpc).

    * `crash_next/2` - the account crashes inside its next `handle_call`
    * `slow/1`       - every transfer sleeps that many ms between withdraw and deposit
    * `flood/2`      - sends a burst of `{:flood, i}` messages to a process
  """
  use GenServer

  @table :bank_faults
  @crash_kinds [:arithmetic, :custom, :exit]

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Arms a crash of kind `:arithmetic`, `:custom` or `:exit` for the account's next call."
  def crash_next(account_id, kind \\ :arithmetic)

  def crash_next(account_id, kind) when kind in @crash_kinds do
    if Bank.Account.whereis(account_id) do
      true = :ets.insert(@table, {{:crash, account_id}, kind})
      :ok
    else
      {:error, :no_such_account}
    end
  end

  def crash_next(_account_id, kind), do: {:error, {:unknown_crash_kind, kind}}

  @doc "Makes every transfer take at least `ms` longer (0 turns it off)."
  def slow(ms) when is_integer(ms) and ms >= 0 do
    true = :ets.insert(@table, {:slow, ms})
    :ok
  end

  def slow_ms do
    case :ets.lookup(@table, :slow) do
      [{:slow, ms}] -> ms
      [] -> 0
    end
  end

  @doc "Sends `n` messages to a pid, a registered name or an account id."
  def flood(target, n) when is_integer(n) and n >= 0 do
    case resolve(target) do
      nil ->
        {:error, :noproc}

      pid ->
        for i <- 1..n//1, do: send(pid, {:flood, i})
        {:ok, n}
    end
  end

  @doc "Turns every switch off."
  def clear do
    true = :ets.delete_all_objects(@table)
    :ok
  end

  def status do
    crashes = for {{:crash, id}, kind} <- :ets.tab2list(@table), do: {id, kind}
    %{crash_next: Map.new(crashes), slow_ms: slow_ms()}
  end

  @doc false
  def maybe_crash!(account_id) do
    case :ets.take(@table, {:crash, account_id}) do
      [] -> :ok
      [{_key, kind}] -> crash!(kind, account_id)
    end
  end

  defp crash!(:arithmetic, _id), do: raise(ArithmeticError)
  defp crash!(:custom, id), do: raise(Bank.AccountCorrupted, account_id: id)
  defp crash!(:exit, id), do: exit({:injected_fault, id})

  defp resolve(pid) when is_pid(pid), do: if(Process.alive?(pid), do: pid)
  defp resolve(name) when is_atom(name), do: Process.whereis(name)
  defp resolve(account_id), do: Bank.Account.whereis(account_id)

  @impl true
  def init(_opts) do
    table = :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    {:ok, %{table: table}}
  end
end
