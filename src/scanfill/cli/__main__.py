"""`python -m scanfill.cli`."""

from scanfill.cli import main

main()
