"""Runtime tracing of a live node through the agent: ``elixirscope.attach``."""
