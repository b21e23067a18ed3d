"""``python -m quiver``: the ``quiver`` command line."""

from quiver.flight_server.cli.main import main

raise SystemExit(main())
