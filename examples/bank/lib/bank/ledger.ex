defmodule Bank.Ledger do
  @moduledoc "Append-only record of opened accounts and committed transfers, kept in an Agent."
  use Agent

  def start_link(_opts), do: Agent.start_link(fn -> [] end, name: __MODULE__)

  def record_open(account, owner, amount) do
    append(%{kind: :open, account: account, owner: owner, amount: amount})
  end

  def record_transfer(ref, from, to, amount) do
    append(%{kind: :transfer, ref: ref, from: from, to: to, amount: amount})
  end

  @doc "Entries, oldest first."
  def entries, do: Agent.get(__MODULE__, &Enum.reverse/1)

  def last(n), do: Agent.get(__MODULE__, &(&1 |> Enum.take(n) |> Enum.reverse()))

  @doc "The balance the ledger implies for an account, or nil if it was never opened."
  def balance_of(account) do
    Agent.get(__MODULE__, fn entries ->
      Enum.reduce(entries, nil, fn
        %{kind: :open, account: ^account, amount: amount}, acc -> (acc || 0) + amount
        %{kind: :transfer, from: ^account, amount: amount}, acc -> (acc || 0) - amount
        %{kind: :transfer, to: ^account, amount: amount}, acc -> (acc || 0) + amount
        _other, acc -> acc
      end)
    end)
  end

  @doc "All money ever put into the bank: what the accounts should add up to."
  def opened_total do
    Agent.get(__MODULE__, fn entries ->
      for %{kind: :open, amount: amount} <- entries, reduce: 0, do: (sum -> sum + amount)
    end)
  end

  def stats do
    Agent.get(__MODULE__, fn entries ->
      transfers = for %{kind: :transfer, amount: amount} <- entries, do: amount
      %{entries: length(entries), transfers: length(transfers), volume: Enum.sum(transfers)}
    end)
  end

  defp append(entry) do
    entry = Map.put(entry, :at, System.system_time(:millisecond))
    Agent.update(__MODULE__, &[entry | &1])
  end
end
