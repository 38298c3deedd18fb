defmodule ShopWeb.RoomChannel do
  use ShopWeb, :channel

  @impl true
  def join("room:" <> room, _params, socket) do
    {:ok, %{room: room}, assign(socket, room: room, said: 0)}
  end

  @impl true
  def handle_in("shout", payload, socket) do
    broadcast!(socket, "shout", Map.put(payload, "from", socket.assigns.user))
    {:noreply, assign(socket, said: socket.assigns.said + 1)}
  end

  def handle_in("ping", payload, socket) do
    {:reply, {:ok, Map.put(payload, "pong", true)}, socket}
  end
end
