"""``python -m asyncsnn``: the command line, as ``torchrun -m asyncsnn train ...`` starts it."""

from .cli import main

if __name__ == "__main__":
    main()
