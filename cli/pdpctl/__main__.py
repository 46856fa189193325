"""`python -m pdpctl`."""

from .main import main

main()
