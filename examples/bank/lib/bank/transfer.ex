defmodule Bank.Transfer do
  @moduledoc """
  The transfer coordinator: withdraws from one account, deposits into the
  other, and refunds the first when the deposit fails. Transfers run one at
  a time, so a slow transfer holds up everyone queued behind it.
  """
  use GenServer
  require Logger

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Returns `{:ok, ref}` or `{:error, reason}`."
  def transfer(from, to, amount, timeout \\ 5_000) do
    GenServer.call(__MODULE__, {:transfer, from, to, amount}, timeout)
  end

  def stats, do: GenServer.call(__MODULE__, :stats)

  @impl true
  def init(_opts), do: {:ok, %{next_ref: 1, ok: 0, failed: 0, compensated: 0}}

  @impl true
  def handle_call({:transfer, same, same, _amount}, _from, state) do
    {:reply, {:error, :same_account}, %{state | failed: state.failed + 1}}
  end

  def handle_call({:transfer, from, to, amount}, _from, state) do
    ref = state.next_ref
    state = %{state | next_ref: ref + 1}

    case run(ref, from, to, amount) do
      :ok ->
        {:reply, {:ok, ref}, %{state | ok: state.ok + 1}}

      {:error, {:compensated, _reason, _refund}} = error ->
        {:reply, error, %{state | compensated: state.compensated + 1}}

      {:error, _reason} = error ->
        {:reply, error, %{state | failed: state.failed + 1}}
    end
  end

  def handle_call(:stats, _from, state), do: {:reply, Map.delete(state, :next_ref), state}

  @impl true
  def handle_info(_msg, state), do: {:noreply, state}

  defp run(ref, from, to, amount) do
    with {:ok, _left} <- account_call(fn -> Bank.Account.withdraw(from, amount, ref) end),
         :ok <- Process.sleep(Bank.Faults.slow_ms()),
         {:ok, _new} <- deposit_or_refund(ref, from, to, amount) do
      Bank.Ledger.record_transfer(ref, from, to, amount)
    end
  end

  defp deposit_or_refund(ref, from, to, amount) do
    case account_call(fn -> Bank.Account.deposit(to, amount, ref) end) do
      {:ok, _new} = ok ->
        ok

      {:error, reason} ->
        Logger.warning(
          "transfer #{ref}: deposit into #{inspect(to)} failed " <>
            "(#{inspect(reason)}), refunding #{inspect(from)}"
        )

        refund = account_call(fn -> Bank.Account.deposit(from, amount, {:refund, ref}) end)
        {:error, {:compensated, reason, refund}}
    end
  end

  defp account_call(fun) do
    fun.()
  catch
    :exit, {:noproc, _call} ->
      {:error, :no_such_account}

    :exit, {:timeout, _call} ->
      {:error, :timeout}

    :exit, {{exception, _stack}, _call} when is_exception(exception) ->
      {:error, {:crashed, exception.__struct__}}

    :exit, {reason, _call} ->
      {:error, {:exit, reason}}
  end
end
