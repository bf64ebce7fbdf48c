"""Subcommands of the `unicon` CLI: one module per subcommand, each with `register(subparsers)`."""
