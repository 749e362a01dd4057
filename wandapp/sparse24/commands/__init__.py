"""`wandapp bench` and `wandapp export`, found by the CLI in this folder (one module per command, named after it)."""
