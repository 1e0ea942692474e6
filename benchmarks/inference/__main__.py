"""``python -m benchmarks.inference``."""

from benchmarks.inference.run import main

raise SystemExit(main())
