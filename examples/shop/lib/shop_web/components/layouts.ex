defmodule ShopWeb.Layouts do
  use Phoenix.Component

  def root(assigns) do
    ~H"""
    <!DOCTYPE html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="csrf-token" content={Phoenix.Controller.get_csrf_token()} />
        <title>Shop</title>
        <script src="/assets/phoenix/phoenix.min.js"></script>
        <script src="/assets/live_view/phoenix_live_view.min.js"></script>
        <script>
          window.addEventListener("DOMContentLoaded", () => {
            const token = document.querySelector("meta[name='csrf-token']").getAttribute("content");
            const live = new LiveView.LiveSocket("/live", Phoenix.Socket, {params: {_csrf_token: token}});
            live.connect();
          });
        </script>
      </head>
      <body><%= @inner_content %></body>
    </html>
    """
  end

  def app(assigns) do
    ~H"""
    <main><%= @inner_content %></main>
    """
  end
end
