"""``python -m control_plane.cli``: the ``mesh`` command without its console script."""

from control_plane.cli import main

main()
