"""``python -m quiver``: the ``quiver`` command line."""

import sys

try:
    from quiver.flight_server.cli.main import main
except KeyboardInterrupt:  # Ctrl-C while the command line is still loading
    print("quiver: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
