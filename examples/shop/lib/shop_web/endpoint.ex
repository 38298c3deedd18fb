defmodule ShopWeb.Endpoint do
  use Phoenix.Endpoint, otp_app: :shop

  @session_options [store: :cookie, key: "_shop_key", signing_salt: "shop-salt", same_site: "Lax"]

  socket "/live", Phoenix.LiveView.Socket, websocket: [connect_info: [session: @session_options]]
  socket "/socket", ShopWeb.UserSocket, websocket: true, longpoll: false

  plug Plug.Static, at: "/assets/phoenix", from: {:phoenix, "priv/static"}, gzip: false
  plug Plug.Static, at: "/assets/live_view", from: {:phoenix_live_view, "priv/static"}, gzip: false
  plug Plug.RequestId
  plug Plug.Telemetry, event_prefix: [:phoenix, :endpoint]

  plug Plug.Parsers,
    parsers: [:urlencoded, :multipart, :json],
    pass: ["*/*"],
    json_decoder: Phoenix.json_library()

  plug Plug.MethodOverride
  plug Plug.Head
  plug Plug.Session, @session_options
  plug ShopWeb.Router
end
