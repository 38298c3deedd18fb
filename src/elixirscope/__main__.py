from elixirscope.cli.app import main

main()
