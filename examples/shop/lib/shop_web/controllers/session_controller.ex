defmodule ShopWeb.SessionController do
  use ShopWeb, :controller

  def create(conn, %{"email" => email, "password" => password}) do
    token = Base.encode16(:crypto.hash(:sha256, email <> password))
    json(conn, %{email: email, token: token})
  end
end
