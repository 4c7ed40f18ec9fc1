"""`python -m ddpmlab`: the same as the `ddpmlab` command."""

from ddpmlab.tools.cli import main

main()
