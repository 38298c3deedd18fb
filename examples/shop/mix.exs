defmodule Shop.MixProject do
  use Mix.Project

  # The versions this app is tested with. From Hex (`mix deps.get`) they are pinned
  # exactly; with SHOP_DEPS_DIR set (a folder holding each library's source, one
  # subfolder per name), the same versions come from there and Hex is never asked.
  @versions [
    phoenix: "1.7.24",
    phoenix_live_view: "0.20.17",
    phoenix_pubsub: "2.2.0",
    phoenix_template: "1.0.4",
    phoenix_html: "4.3.0",
    phoenix_ecto: "4.7.0",
    plug: "1.19.2",
    plug_crypto: "2.1.1",
    mime: "2.0.7",
    telemetry: "1.4.1",
    websock: "0.5.3",
    websock_adapter: "0.5.9",
    bandit: "1.11.1",
    thousand_island: "1.5.0",
    hpax: "1.0.3",
    jason: "1.4.5",
    ecto: "3.13.6",
    ecto_sql: "3.13.5",
    postgrex: "0.21.1",
    db_connection: "2.10.2",
    decimal: "2.3.0",
    castore: "1.0.19"
  ]

  def project do
    [
      app: :shop,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: false,
      deps: deps()
    ]
  end

  def application do
    [mod: {Shop.Application, []}, extra_applications: [:logger]]
  end

  defp deps do
    case System.get_env("SHOP_DEPS_DIR") do
      nil ->
        for {name, version} <- @versions, do: {name, "== " <> version}

      dir ->
        for {name, _version} <- @versions,
            do: {name, path: Path.join(dir, Atom.to_string(name)), override: true}
    end
  end
end
