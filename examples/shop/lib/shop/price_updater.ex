defmodule Shop.PriceUpdater do
  @moduledoc """
  A background job: changes a product's price and tells the carts over PubSub, on
  demand (`bump/2`) or on a timer (`tick_every/1`).
  """
  use GenServer

  def start_link(_),
    do: GenServer.start_link(__MODULE__, %{updates: 0, last: nil, every: 0}, name: __MODULE__)

  def bump(product_id, price), do: GenServer.cast(__MODULE__, {:bump, product_id, price})

  @doc "Changes a random product's price every `ms` milliseconds (0: never)."
  def tick_every(ms) when is_integer(ms) and ms >= 0, do: GenServer.call(__MODULE__, {:every, ms})

  @impl true
  def init(state), do: {:ok, state}

  @impl true
  def handle_call({:every, ms}, _from, state) do
    if ms > 0, do: Process.send_after(self(), :tick, ms)
    {:reply, :ok, %{state | every: ms}}
  end

  @impl true
  def handle_cast({:bump, id, price}, state), do: {:noreply, change(id, price, state)}

  @impl true
  def handle_info(:tick, %{every: 0} = state), do: {:noreply, state}

  def handle_info(:tick, state) do
    Process.send_after(self(), :tick, state.every)
    {:noreply, change(:rand.uniform(3), 100 + :rand.uniform(50), state)}
  end

  defp change(id, price, state) do
    :ok = Shop.Catalog.set_price(id, price)
    Phoenix.PubSub.broadcast(Shop.PubSub, "prices", {:price_changed, id, price})
    %{state | updates: state.updates + 1, last: {id, price}}
  end
end
