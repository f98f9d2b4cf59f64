"""`python -m service` runs `dotcos-serve`."""

from service.cli import main

raise SystemExit(main())
