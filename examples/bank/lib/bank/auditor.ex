defmodule Bank.Auditor do
  @moduledoc """
  Every `interval` ms, adds up all balances and compares the sum with the
  money the ledger says was put in. A transfer caught between its withdraw
  and its deposit shows up as a mismatch too.
  """
  use GenServer
  require Logger

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "The result of the latest audit: `{:ok, total}`, `{:mismatch, total, expected}` or `{:partial, total, failed_ids}`."
  def last, do: GenServer.call(__MODULE__, :last)

  def check_now, do: GenServer.call(__MODULE__, :check_now)

  def stats, do: GenServer.call(__MODULE__, :stats)

  @impl true
  def init(opts) do
    state = %{interval: Keyword.get(opts, :interval, 1_000), checks: 0, mismatches: 0, last: nil}
    {:ok, state, {:continue, :schedule}}
  end

  @impl true
  def handle_continue(:schedule, state) do
    Process.send_after(self(), :audit, state.interval)
    {:noreply, state}
  end

  @impl true
  def handle_call(:last, _from, state), do: {:reply, state.last, state}
  def handle_call(:stats, _from, state), do: {:reply, state, state}

  def handle_call(:check_now, _from, state) do
    state = audit(state)
    {:reply, state.last, state}
  end

  @impl true
  def handle_info(:audit, state), do: {:noreply, audit(state), {:continue, :schedule}}
  def handle_info(_msg, state), do: {:noreply, state}

  defp audit(state) do
    expected = Bank.Ledger.opened_total()

    result =
      case Bank.Report.total() do
        {:ok, ^expected} ->
          {:ok, expected}

        {:ok, total} ->
          Logger.warning("audit: accounts hold #{total}, ledger says #{expected}")
          {:mismatch, total, expected}

        {:partial, _total, _failed} = partial ->
          partial
      end

    mismatches = if elem(result, 0) == :ok, do: state.mismatches, else: state.mismatches + 1
    %{state | checks: state.checks + 1, mismatches: mismatches, last: result}
  end
end
