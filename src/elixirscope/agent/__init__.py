"""The agent ElixirScope compiles on a traced node (``elixirscope_agent.erl``)."""
