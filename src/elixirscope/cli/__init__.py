"""The ``elixirscope`` command."""
