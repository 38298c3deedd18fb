defmodule Bank.Demo do
  @moduledoc """
  Starts the bank with a workload and, unless `faults: false`, a short script
  of faults: an account crash, a slow spell and a message flood.
  """

  @script [
    {3_000, {Bank.Faults, :crash_next, [2, :arithmetic]}},
    {3_000, {Bank.Faults, :slow, [250]}},
    {2_000, {Bank.Faults, :slow, [0]}},
    {1_000, {Bank.Faults, :flood, [1, 5_000]}},
    {2_000, {Bank.Faults, :crash_next, [4, :custom]}}
  ]

  def run(opts \\ []) do
    workload = Keyword.get(opts, :workload, rate: 20, seed: 42)

    with :ok <- Bank.start(workload: workload) do
      if Keyword.get(opts, :faults, true) do
        {:ok, _pid} = Task.start(fn -> play(@script) end)
      end

      :ok
    end
  end

  defp play(script) do
    for {delay, {module, function, args}} <- script do
      Process.sleep(delay)
      apply(module, function, args)
    end
  end
end
