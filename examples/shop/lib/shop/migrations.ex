defmodule Shop.Migrations.Create do
  use Ecto.Migration

  def change do
    create table(:products) do
      add :name, :string, null: false
      add :price, :integer, null: false
      add :stock, :integer, null: false
      timestamps()
    end

    create table(:reviews) do
      add :product_id, references(:products), null: false
      add :stars, :integer
      add :body, :string
      timestamps()
    end

    create index(:reviews, [:product_id])

    create table(:orders) do
      add :product_id, :integer
      add :quantity, :integer
      add :total, :integer
      add :discount, :integer
      timestamps()
    end
  end
end
