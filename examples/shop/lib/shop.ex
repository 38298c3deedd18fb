defmodule Shop do
  @moduledoc """
  A small store on Phoenix, LiveView, Channels and Ecto/PostgreSQL, for ElixirScope
  to record. `Shop.start/1` configures and starts it; `Shop.Faults` switches its
  injected faults on and off.
  """

  @doc """
  Starts the store: `port` for HTTP on 127.0.0.1, `db` the Postgrex connection
  options (hostname or socket_dir, port, username, database). Creates the database
  and its tables when they are missing and seeds the catalog.
  """
  def start(opts) do
    port = Keyword.fetch!(opts, :port)
    db = Keyword.fetch!(opts, :db)
    Logger.configure(level: :warning)
    Application.put_env(:phoenix, :json_library, Jason)
    Application.put_env(:shop, Shop.Repo, db ++ [pool_size: 10, log: false])

    Application.put_env(:shop, ShopWeb.Endpoint,
      adapter: Bandit.PhoenixAdapter,
      http: [ip: {127, 0, 0, 1}, port: port],
      server: true,
      secret_key_base: String.duplicate("shop-secret-key-base-", 4),
      live_view: [signing_salt: "shop-lv-salt"],
      pubsub_server: Shop.PubSub,
      check_origin: false,
      render_errors: [formats: [html: ShopWeb.ErrorHTML, json: ShopWeb.ErrorJSON], layout: false]
    )

    {:ok, _} = Application.ensure_all_started(:ecto_sql)
    {:ok, _} = Application.ensure_all_started(:postgrex)

    case Ecto.Adapters.Postgres.storage_up(db) do
      :ok -> :ok
      {:error, :already_up} -> :ok
    end

    {:ok, _} = Application.ensure_all_started(:shop)
    Ecto.Migrator.run(Shop.Repo, [{1, Shop.Migrations.Create}], :up, all: true, log: false)
    Shop.Catalog.seed()
    if Keyword.get(opts, :faults, false), do: Shop.Faults.enable_all()
    Shop.PriceUpdater.tick_every(Keyword.get(opts, :price_tick_ms, 0))
    :ok
  end
end
