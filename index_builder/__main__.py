"""`python -m index_builder` runs the `dotcos-build` CLI."""

from index_builder.cli import main

raise SystemExit(main())
