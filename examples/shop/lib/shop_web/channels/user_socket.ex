defmodule ShopWeb.UserSocket do
  use Phoenix.Socket

  channel "room:*", ShopWeb.RoomChannel

  @impl true
  def connect(params, socket, _connect_info) do
    {:ok, assign(socket, :user, Map.get(params, "user", "anonymous"))}
  end

  @impl true
  def id(_socket), do: nil
end
