"""`python -m catalyst_ttt` is `cttt`."""

from catalyst_ttt.cli import main

main()
