defmodule Bank do
  @moduledoc """
  A small bank: accounts are processes, transfers go through a coordinator,
  an auditor checks that no money appears or disappears.

  Start it with `Bank.start/1` (or `mix run --no-halt`), drive it with
  `Bank.Workload`, and break it on purpose with `Bank.Faults`.
  """

  @default_accounts [
    {1, "alice", 1_000},
    {2, "bob", 1_000},
    {3, "carol", 1_000},
    {4, "dave", 1_000},
    {5, "erin", 1_000}
  ]

  @owners ~w(alice bob carol dave erin frank grace heidi ivan judy)

  @doc """
  Starts the bank application.

  Options: `accounts:` (a count, or a list of `{id, owner, balance}`),
  `audit_interval:` (ms), `workload:` (`false`, `true` or `Bank.Workload.start/1`
  options).
  """
  def start(opts \\ []) do
    for {key, value} <- opts, key in [:accounts, :audit_interval] do
      Application.put_env(:bank, key, value)
    end

    with {:ok, _started} <- Application.ensure_all_started(:bank) do
      case Keyword.get(opts, :workload, false) do
        false -> :ok
        true -> Bank.Workload.start()
        workload_opts -> Bank.Workload.start(workload_opts)
      end
    end
  end

  @doc "The accounts opened when the application starts."
  def initial_accounts do
    case Application.get_env(:bank, :accounts, @default_accounts) do
      count when is_integer(count) and count > 0 ->
        for id <- 1..count, do: {id, Enum.at(@owners, rem(id - 1, length(@owners))), 1_000}

      accounts when is_list(accounts) ->
        accounts
    end
  end

  @doc "Opens an account under `Bank.AccountSupervisor`."
  def open_account(id, owner, balance \\ 0, limits \\ %{}) do
    spec = {Bank.Account, id: id, owner: owner, balance: balance, limits: limits}

    case DynamicSupervisor.start_child(Bank.AccountSupervisor, spec) do
      {:ok, pid} -> {:ok, pid}
      {:error, {:already_started, _pid}} -> {:error, :already_exists}
      {:error, reason} -> {:error, reason}
    end
  end

  @doc "Ids of the open accounts, sorted."
  def account_ids do
    Bank.Registry
    |> Registry.select([{{:"$1", :_, :_}, [], [:"$1"]}])
    |> Enum.sort()
  end

  defdelegate balance(id), to: Bank.Account
  defdelegate transfer(from, to, amount), to: Bank.Transfer
end
