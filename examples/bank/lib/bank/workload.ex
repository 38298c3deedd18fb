defmodule Bank.Workload do
  @moduledoc """
  Drives random transfers among the accounts at a steady rate.

  The sequence of `{from, to, amount}` it asks for depends only on the seed
  and the set of account ids. Each transfer runs in its own task under
  `Bank.TaskSupervisor`; at most `max_in_flight` run at once and the rest of a
  tick is counted as `skipped`.

      Bank.Workload.start(rate: 50, seed: 7)
      Bank.Workload.pause()
      Bank.Workload.resume()
      Bank.Workload.stats()
      Bank.Workload.stop()
  """
  use GenServer

  @min_tick_ms 10
  @zero %{sent: 0, ok: 0, failed: 0, crashed: 0, skipped: 0}

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Options: `rate` (transfers/s, default 20), `seed` (default 1), `max_amount` (default 100), `max_in_flight` (default 50)."
  def start(opts \\ []), do: GenServer.call(__MODULE__, {:start, Map.new(opts)})
  def stop, do: GenServer.call(__MODULE__, :stop)
  def pause, do: GenServer.call(__MODULE__, :pause)
  def resume, do: GenServer.call(__MODULE__, :resume)
  def stats, do: GenServer.call(__MODULE__, :stats)

  @impl true
  def init(_opts) do
    {:ok,
     %{
       status: :idle,
       rate: 0,
       seed: nil,
       max_amount: 100,
       max_in_flight: 50,
       rand: nil,
       generation: 0,
       in_flight: %{},
       counts: @zero,
       last_error: nil
     }}
  end

  @impl true
  def handle_call({:start, opts}, _from, state) do
    case Map.get(opts, :rate, 20) do
      rate when is_integer(rate) and rate > 0 -> start_running(state, rate, opts)
      rate -> {:reply, {:error, {:invalid_rate, rate}}, state}
    end
  end

  def handle_call(:stop, _from, state) do
    {:reply, :ok, %{state | status: :idle, generation: state.generation + 1}}
  end

  def handle_call(:pause, _from, %{status: :running} = state) do
    {:reply, :ok, %{state | status: :paused, generation: state.generation + 1}}
  end

  def handle_call(:resume, _from, %{status: :paused} = state) do
    {:reply, :ok, %{state | status: :running}, {:continue, :schedule}}
  end

  def handle_call(request, _from, state) when request in [:pause, :resume] do
    {:reply, {:error, {:not_allowed_when, state.status}}, state}
  end

  def handle_call(:stats, _from, state) do
    stats =
      state
      |> Map.take([:status, :rate, :seed, :last_error])
      |> Map.merge(state.counts)
      |> Map.put(:in_flight, map_size(state.in_flight))

    {:reply, stats, state}
  end

  @impl true
  def handle_continue(:schedule, state) do
    Process.send_after(self(), {:tick, state.generation}, tick_ms(state.rate))
    {:noreply, state}
  end

  @impl true
  def handle_info({:tick, generation}, %{status: :running, generation: generation} = state) do
    per_tick = max(1, div(state.rate * tick_ms(state.rate), 1_000))
    {:noreply, fire(state, per_tick, Bank.account_ids()), {:continue, :schedule}}
  end

  def handle_info({:tick, _stale}, state), do: {:noreply, state}

  def handle_info({ref, result}, state) when is_map_key(state.in_flight, ref) do
    Process.demonitor(ref, [:flush])

    case result do
      {:ok, _transfer_ref} -> {:noreply, done(state, ref, :ok, nil)}
      {:error, reason} -> {:noreply, done(state, ref, :failed, reason)}
    end
  end

  def handle_info({:DOWN, ref, :process, _pid, reason}, state)
      when is_map_key(state.in_flight, ref) do
    {:noreply, done(state, ref, :crashed, reason)}
  end

  def handle_info(_msg, state), do: {:noreply, state}

  defp start_running(state, rate, opts) do
    seed = Map.get(opts, :seed, 1)

    state = %{
      state
      | status: :running,
        rate: rate,
        seed: seed,
        max_amount: Map.get(opts, :max_amount, 100),
        max_in_flight: Map.get(opts, :max_in_flight, 50),
        rand: :rand.seed_s(:exsss, {seed, seed, seed}),
        generation: state.generation + 1,
        counts: @zero,
        last_error: nil
    }

    {:reply, :ok, state, {:continue, :schedule}}
  end

  defp tick_ms(rate) when rate > 0, do: max(@min_tick_ms, div(1_000, rate))

  defp fire(state, 0, _ids), do: state
  defp fire(state, _n, ids) when length(ids) < 2, do: state

  defp fire(state, n, ids) do
    {from, to, amount, rand} = pick(ids, state.max_amount, state.rand)
    state = %{state | rand: rand}

    state =
      if map_size(state.in_flight) >= state.max_in_flight do
        bump(state, :skipped)
      else
        task =
          Task.Supervisor.async_nolink(Bank.TaskSupervisor, Bank.Transfer, :transfer, [
            from,
            to,
            amount
          ])

        %{bump(state, :sent) | in_flight: Map.put(state.in_flight, task.ref, {from, to, amount})}
      end

    fire(state, n - 1, ids)
  end

  defp pick(ids, max_amount, rand) do
    count = length(ids)
    {i, rand} = :rand.uniform_s(count, rand)
    {j, rand} = :rand.uniform_s(count - 1, rand)
    {amount, rand} = :rand.uniform_s(max_amount, rand)
    j = if j >= i, do: j + 1, else: j
    {Enum.at(ids, i - 1), Enum.at(ids, j - 1), amount, rand}
  end

  defp done(state, ref, outcome, error) do
    state = %{bump(state, outcome) | in_flight: Map.delete(state.in_flight, ref)}
    if error, do: %{state | last_error: error}, else: state
  end

  defp bump(state, key), do: %{state | counts: Map.update!(state.counts, key, &(&1 + 1))}
end
