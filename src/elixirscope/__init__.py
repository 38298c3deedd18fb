"""ElixirScope: an execution-cinema, time-travel debugger for Elixir and Erlang systems."""

__version__ = "0.1.0"
