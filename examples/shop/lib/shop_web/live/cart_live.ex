defmodule ShopWeb.CartLive do
  use ShopWeb, :live_view
  alias Shop.Catalog

  @impl true
  def mount(_params, _session, socket) do
    if connected?(socket), do: Phoenix.PubSub.subscribe(Shop.PubSub, "prices")
    products = for p <- Catalog.list_products(), into: %{}, do: {p.id, %{name: p.name, price: p.price}}
    # The payment provider's token for this cart: a secret the debugger must not ship.
    token = "tok_" <> Base.encode16(:crypto.strong_rand_bytes(8))
    {:ok, assign(socket, products: products, items: %{}, total: 0, orders: 0, payment_token: token)}
  end

  @impl true
  def handle_event("add", %{"id" => id}, socket) do
    id = String.to_integer(id)
    items = Map.update(socket.assigns.items, id, 1, &(&1 + 1))
    {:noreply, assign(socket, items: items, total: total(items, socket.assigns.products))}
  end

  def handle_event("remove", %{"id" => id}, socket) do
    items = Map.delete(socket.assigns.items, String.to_integer(id))
    {:noreply, assign(socket, items: items, total: total(items, socket.assigns.products))}
  end

  def handle_event("checkout", _params, socket) do
    charged = Catalog.checkout(socket.assigns.items)
    {:noreply, assign(socket, items: %{}, total: 0, orders: socket.assigns.orders + 1, charged: charged)}
  end

  @impl true
  def handle_info({:price_changed, id, price}, socket) do
    products = Map.update(socket.assigns.products, id, %{name: "?", price: price}, &%{&1 | price: price})
    {:noreply, assign(socket, products: products, total: total(socket.assigns.items, products))}
  end

  defp total(items, products) do
    Enum.reduce(items, 0, fn {id, n}, sum -> sum + n * products[id].price end)
  end

  @impl true
  def render(assigns) do
    ~H"""
    <h1>Cart</h1>
    <ul>
      <li :for={{id, p} <- Enum.sort(@products)}>
        <%= p.name %> (<%= p.price %>)
        <button phx-click="add" phx-value-id={id}>add</button>
        <button phx-click="remove" phx-value-id={id}>remove</button>
      </li>
    </ul>
    <.live_component module={ShopWeb.CartSummary} id="summary" items={@items} total={@total} />
    <button phx-click="checkout">checkout</button>
    """
  end
end
