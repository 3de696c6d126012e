"""`python -m listener` is the same CLI as `listener`."""

from listener.cli import main

raise SystemExit(main())
