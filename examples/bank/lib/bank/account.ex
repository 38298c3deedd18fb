defmodule Bank.Account do
  @moduledoc """
  One account: a GenServer registered in `Bank.Registry` under its id.

  After a crash the supervisor restarts it and it rebuilds its balance from
  `Bank.Ledger` (money withdrawn by a transfer still in flight is not there yet).
  """
  use GenServer, restart: :transient

  defstruct [:id, :owner, balance: 0, history: [], limits: %{}]

  @history_size 20
  @idle_timeout 10_000
  @default_limits %{max_withdrawal: 5_000, max_balance: 1_000_000}

  def start_link(opts) do
    GenServer.start_link(__MODULE__, opts, name: via(Keyword.fetch!(opts, :id)))
  end

  def via(id), do: {:via, Registry, {Bank.Registry, id}}

  def whereis(id) do
    case Registry.lookup(Bank.Registry, id) do
      [{pid, _value}] -> pid
      [] -> nil
    end
  end

  def balance(id), do: GenServer.call(via(id), :balance)
  def snapshot(id), do: GenServer.call(via(id), :snapshot)
  def deposit(id, amount, ref), do: GenServer.call(via(id), {:deposit, amount, ref})
  def withdraw(id, amount, ref), do: GenServer.call(via(id), {:withdraw, amount, ref})
  def set_limit(id, key, value), do: GenServer.cast(via(id), {:set_limit, key, value})

  @impl true
  def init(opts) do
    state = %__MODULE__{
      id: Keyword.fetch!(opts, :id),
      owner: Keyword.fetch!(opts, :owner),
      balance: Keyword.get(opts, :balance, 0),
      limits: Map.merge(@default_limits, Map.new(Keyword.get(opts, :limits, %{})))
    }

    {:ok, state, {:continue, :recover}}
  end

  @impl true
  def handle_continue(:recover, state) do
    case Bank.Ledger.balance_of(state.id) do
      nil ->
        :ok = Bank.Ledger.record_open(state.id, state.owner, state.balance)
        {:noreply, remember(state, {:opened, state.balance}), @idle_timeout}

      balance ->
        {:noreply, remember(%{state | balance: balance}, {:recovered, balance}), @idle_timeout}
    end
  end

  def handle_continue({:remember, entry}, state) do
    {:noreply, remember(state, entry), @idle_timeout}
  end

  @impl true
  def handle_call(request, _from, state) do
    Bank.Faults.maybe_crash!(state.id)
    handle_request(request, state)
  end

  @impl true
  def handle_cast({:set_limit, key, value}, state) do
    state = %{state | limits: Map.put(state.limits, key, value)}
    {:noreply, state, {:continue, {:remember, {:limit, key, value}}}}
  end

  @impl true
  def handle_info(:timeout, state), do: {:noreply, state, :hibernate}
  def handle_info({:flood, _n}, state), do: {:noreply, state}
  def handle_info(_other, state), do: {:noreply, state, @idle_timeout}

  defp handle_request(:balance, state), do: {:reply, state.balance, state, @idle_timeout}
  defp handle_request(:snapshot, state), do: {:reply, state, state, @idle_timeout}

  defp handle_request({:deposit, amount, ref}, state) do
    cond do
      not valid_amount?(amount) ->
        {:reply, {:error, :invalid_amount}, state, @idle_timeout}

      state.balance + amount > state.limits.max_balance ->
        {:reply, {:error, :over_max_balance}, state, @idle_timeout}

      true ->
        state = %{state | balance: state.balance + amount}
        {:reply, {:ok, state.balance}, state, {:continue, {:remember, {:deposit, amount, ref}}}}
    end
  end

  defp handle_request({:withdraw, amount, ref}, state) do
    cond do
      not valid_amount?(amount) ->
        {:reply, {:error, :invalid_amount}, state, @idle_timeout}

      amount > state.limits.max_withdrawal ->
        {:reply, {:error, :over_withdrawal_limit}, state, @idle_timeout}

      amount > state.balance ->
        {:reply, {:error, :insufficient_funds}, state, @idle_timeout}

      true ->
        state = %{state | balance: state.balance - amount}
        {:reply, {:ok, state.balance}, state, {:continue, {:remember, {:withdraw, amount, ref}}}}
    end
  end

  defp valid_amount?(amount), do: is_integer(amount) and amount > 0

  defp remember(state, entry) do
    entry = Tuple.append(entry, System.system_time(:millisecond))
    %{state | history: Enum.take([entry | state.history], @history_size)}
  end
end
