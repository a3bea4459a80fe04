"""``python -m asgardeo_standin serve ...``."""

from .cli import main

raise SystemExit(main())
