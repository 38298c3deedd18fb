defmodule Bank.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      {Registry, keys: :unique, name: Bank.Registry},
      Bank.Faults,
      Bank.Ledger,
      {Task.Supervisor, name: Bank.TaskSupervisor},
      {DynamicSupervisor,
       name: Bank.AccountSupervisor, strategy: :one_for_one, max_restarts: 10, max_seconds: 5},
      Bank.Transfer,
      {Bank.Auditor, interval: Application.get_env(:bank, :audit_interval, 1_000)},
      Bank.Workload
    ]

    with {:ok, sup} <-
           Supervisor.start_link(children, strategy: :one_for_one, name: Bank.Supervisor) do
      for {id, owner, balance} <- Bank.initial_accounts() do
        {:ok, _pid} = Bank.open_account(id, owner, balance)
      end

      {:ok, sup}
    end
  end
end
