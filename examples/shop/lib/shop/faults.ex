defmodule Shop.Faults do
  @moduledoc """
  The store's injected faults, off until switched on:

    * `:n_plus_one`    GET /api/products loads each product's reviews with a query of its own
    * `:slow_search`   GET /api/search runs a query that sleeps 200 ms in PostgreSQL
    * `:slow_checkout` the cart's "checkout" event waits on a slow query (300 ms)
  """
  use Agent

  @all [:n_plus_one, :slow_search, :slow_checkout]

  def start_link(_), do: Agent.start_link(fn -> MapSet.new() end, name: __MODULE__)

  def on?(fault), do: Agent.get(__MODULE__, &MapSet.member?(&1, fault))
  def enable(fault) when fault in @all, do: Agent.update(__MODULE__, &MapSet.put(&1, fault))
  def disable(fault), do: Agent.update(__MODULE__, &MapSet.delete(&1, fault))
  def enable_all, do: Enum.each(@all, &enable/1)
end
