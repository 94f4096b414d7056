"""`python -m components` is the `nerve` command (child processes are started this way)."""

from components.cli.main import main

main()
