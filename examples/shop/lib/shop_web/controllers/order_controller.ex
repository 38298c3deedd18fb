defmodule ShopWeb.OrderController do
  use ShopWeb, :controller

  def create(conn, %{"product_id" => product_id, "quantity" => quantity}) do
    order = Shop.Catalog.place_order(to_int(product_id), to_int(quantity))
    conn |> put_status(201) |> json(%{id: order.id, total: order.total})
  end

  defp to_int(value) when is_integer(value), do: value
  defp to_int(value) when is_binary(value), do: String.to_integer(value)
end
