defmodule Shop.Product do
  use Ecto.Schema

  schema "products" do
    field :name, :string
    field :price, :integer
    field :stock, :integer
    has_many :reviews, Shop.Review
    timestamps()
  end
end

defmodule Shop.Review do
  use Ecto.Schema

  schema "reviews" do
    field :stars, :integer
    field :body, :string
    belongs_to :product, Shop.Product
    timestamps()
  end
end

defmodule Shop.Order do
  use Ecto.Schema

  schema "orders" do
    field :product_id, :integer
    field :quantity, :integer
    field :total, :integer
    field :discount, :integer
    timestamps()
  end
end

defmodule Shop.Catalog do
  import Ecto.Query
  alias Shop.{Faults, Order, Product, Repo, Review}

  @products 12

  def seed do
    if Repo.aggregate(Product, :count) == 0 do
      for i <- 1..@products do
        product = Repo.insert!(%Product{name: "Product #{i}", price: 100 * i, stock: 50})

        for stars <- [3, 4, 5] do
          Repo.insert!(%Review{product_id: product.id, stars: stars, body: "review #{stars}"})
        end
      end
    end

    :ok
  end

  def list_products do
    products = Repo.all(from p in Product, order_by: p.id)

    if Faults.on?(:n_plus_one) do
      Enum.map(products, fn product ->
        %{product | reviews: Repo.all(from r in Review, where: r.product_id == ^product.id)}
      end)
    else
      Repo.preload(products, :reviews)
    end
  end

  def get_product!(id), do: Repo.get!(Product, id)

  def search(term) do
    delay = if Faults.on?(:slow_search), do: 0.2, else: 0.0
    pattern = "%" <> term <> "%"

    Repo.all(
      from p in Product,
        where: ilike(p.name, ^pattern),
        where: fragment("(SELECT pg_sleep(?::float)) IS NOT NULL", ^delay),
        order_by: p.id
    )
  end

  @doc "Places an order; the discount is spread over the quantity."
  def place_order(product_id, quantity) do
    product = get_product!(product_id)
    discount = div(product.price, quantity * 10)
    total = product.price * quantity - discount
    Repo.insert!(%Order{product_id: product.id, quantity: quantity, total: total, discount: discount})
  end

  def checkout(items) do
    if Faults.on?(:slow_checkout), do: Repo.query!("SELECT pg_sleep(0.3)")
    ids = Map.keys(items)
    prices = Repo.all(from p in Product, where: p.id in ^ids, select: {p.id, p.price})
    Enum.reduce(prices, 0, fn {id, price}, sum -> sum + price * Map.fetch!(items, id) end)
  end

  def set_price(id, price) do
    Repo.update_all(from(p in Product, where: p.id == ^id), set: [price: price])
    :ok
  end
end
