defmodule ShopWeb.PageController do
  use ShopWeb, :controller

  def home(conn, _params) do
    html(conn, ~s(<!DOCTYPE html><html><body><a href="/cart">Cart</a></body></html>))
  end
end
