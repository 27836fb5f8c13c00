from __future__ import annotations

from swell.cli import main

main()
