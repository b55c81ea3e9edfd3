"""Thin entry so `python cli.py ...` works from a checkout; the click group lives in tfbonemet.cli."""
from tfbonemet.cli import main

if __name__ == "__main__":
    main()
