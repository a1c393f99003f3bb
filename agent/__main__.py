"""``python -m agent`` runs the command line."""

from .cli import main

main()
