"""`python -m effseg ...` (used by `torchrun -m effseg train ...`)."""

from effseg.cli import main

raise SystemExit(main())
