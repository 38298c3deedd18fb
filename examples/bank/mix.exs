defmodule Bank.MixProject do
  use Mix.Project

  def project do
    [
      app: :bank,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: []
    ]
  end

  # ElixirScope's launcher compiles lib/ with elixirc and writes an equivalent
  # bank.app itself (see elixirscope.sample_nodes); keep the two in step.
  def application do
    [
      mod: {Bank.Application, []},
      extra_applications: [:logger]
    ]
  end
end
