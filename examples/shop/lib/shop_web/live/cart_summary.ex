defmodule ShopWeb.CartSummary do
  use ShopWeb, :live_component

  @impl true
  def mount(socket), do: {:ok, assign(socket, expanded: false)}

  @impl true
  def update(assigns, socket) do
    count = assigns.items |> Map.values() |> Enum.sum()
    {:ok, socket |> assign(assigns) |> assign(count: count)}
  end

  @impl true
  def handle_event("toggle", _params, socket) do
    {:noreply, assign(socket, expanded: not socket.assigns.expanded)}
  end

  @impl true
  def render(assigns) do
    ~H"""
    <div id="summary">
      <button phx-click="toggle" phx-target={@myself}><%= @count %> items, <%= @total %></button>
      <ul :if={@expanded}><li :for={{id, n} <- @items}><%= id %> x <%= n %></li></ul>
    </div>
    """
  end
end
