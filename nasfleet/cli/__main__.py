"""``python -m nasfleet.cli``: the ``nasfleet`` command."""

from nasfleet.cli import main

main()
