"""`python -m listener` is the same CLI as `listener`."""

from listener.cli.main import main

raise SystemExit(main())
