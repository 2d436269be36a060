"""``python -m laspa``: the ``laspa`` command."""

from .console import main

main()
