"""``python -m token_service``: the same command line as the ``token-service`` console script (token_service.cli)."""

from __future__ import annotations

import sys

from token_service.cli import main

if __name__ == "__main__":
    sys.exit(main())
