"""`python -m components` is the `nerve` command (child processes are started this way)."""

from components.cli import main

main()
