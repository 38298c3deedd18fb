defmodule ShopWeb.ProductController do
  use ShopWeb, :controller
  alias Shop.Catalog

  def index(conn, _params) do
    products = Catalog.list_products()
    json(conn, %{products: Enum.map(products, &summary/1)})
  end

  def show(conn, %{"id" => id}) do
    product = Catalog.get_product!(id)
    json(conn, %{id: product.id, name: product.name, price: product.price})
  end

  def search(conn, params) do
    products = Catalog.search(Map.get(params, "q", ""))
    json(conn, %{products: Enum.map(products, &%{id: &1.id, name: &1.name})})
  end

  defp summary(product) do
    stars = Enum.map(product.reviews, & &1.stars)
    %{id: product.id, name: product.name, price: product.price, reviews: length(stars)}
  end
end
