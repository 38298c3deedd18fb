defmodule Bank.Report do
  @moduledoc "Reports built concurrently, one task per account."

  @timeout 2_000

  @doc "`%{id => balance}`; an account that did not answer maps to `{:error, reason}`."
  def balances do
    ids = Bank.account_ids()

    results =
      Task.Supervisor.async_stream_nolink(Bank.TaskSupervisor, ids, &Bank.Account.balance/1,
        timeout: @timeout,
        on_timeout: :kill_task,
        max_concurrency: 8
      )

    Map.new(Enum.zip(ids, results), fn
      {id, {:ok, balance}} -> {id, balance}
      {id, {:exit, reason}} -> {id, {:error, reason}}
    end)
  end

  @doc "`{:ok, total}`, or `{:partial, total, failed_ids}` when some accounts did not answer."
  def total do
    {answered, failed} = Enum.split_with(balances(), fn {_id, balance} -> is_integer(balance) end)
    total = answered |> Enum.map(&elem(&1, 1)) |> Enum.sum()

    case failed do
      [] -> {:ok, total}
      _ -> {:partial, total, failed |> Enum.map(&elem(&1, 0)) |> Enum.sort()}
    end
  end

  def summary do
    [balances, ledger, transfers] =
      [&balances/0, &Bank.Ledger.stats/0, &Bank.Transfer.stats/0]
      |> Enum.map(&Task.async/1)
      |> Task.await_many(5_000)

    %{balances: balances, ledger: ledger, transfers: transfers, workload: Bank.Workload.stats()}
  end
end
