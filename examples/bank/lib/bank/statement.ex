defmodule Bank.Directory do
  @moduledoc """
  A slow directory of account holders, standing in for a remote service: every
  `lookup/1` takes 5 ms. `set_offline(true)` makes lookups raise.
  """

  @latency_ms 5
  @holders %{1 => "alice", 2 => "bob", 3 => "carol", 4 => "dave", 5 => "erin"}

  def lookup(id) do
    if :persistent_term.get({__MODULE__, :offline}, false) do
      raise RuntimeError, "directory offline"
    end

    Process.sleep(@latency_ms)
    %{id: id, holder: Map.get(@holders, id, "unknown"), branch: __MODULE__.branch(id)}
  end

  def branch(id), do: if(rem(id, 2) == 0, do: :north, else: :south)

  def set_offline(offline) when is_boolean(offline) do
    :persistent_term.put({__MODULE__, :offline}, offline)
  end
end

defmodule Bank.Statement do
  @moduledoc """
  Account statements, built the slow way: every line looks the account's holder up
  again in `Bank.Directory` (the same lookup once per line: an N+1 pattern).
  """

  def build(id, amounts) do
    lines = Enum.map(amounts, fn amount -> __MODULE__.line(id, amount) end)
    %{account: id, lines: lines, total: Enum.sum(amounts)}
  end

  def line(id, amount) do
    holder = Bank.Directory.lookup(id)
    %{holder: holder.holder, amount: amount}
  end
end

defmodule Bank.Rates do
  @moduledoc """
  A flaky exchange-rate source and a retry loop around it:
  `fetch_with_retry(currency, failures)` gets `{:error, :busy}` `failures` times
  (counted in the calling process) before the rate comes.
  """

  @rates %{eur: 1.08, gbp: 1.27, jpy: 0.0067}

  def fetch_with_retry(currency, failures) do
    Process.put({__MODULE__, currency}, failures)
    __MODULE__.retry(currency, 10)
  end

  def retry(currency, attempts_left) do
    case __MODULE__.fetch(currency) do
      {:error, :busy} when attempts_left > 1 ->
        Process.sleep(1)
        __MODULE__.retry(currency, attempts_left - 1)

      result ->
        result
    end
  end

  def fetch(currency) do
    case Process.get({__MODULE__, currency}, 0) do
      0 ->
        {:ok, Map.fetch!(@rates, currency)}

      left ->
        Process.put({__MODULE__, currency}, left - 1)
        {:error, :busy}
    end
  end
end
