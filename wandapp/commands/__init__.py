"""CLI subcommands, one module per stage. Each defines `register(subparsers)`."""
