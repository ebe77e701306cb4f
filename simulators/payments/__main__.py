"""``python -m simulators.payments``: run the simulators (options in :mod:`.cli`)."""

from .cli import main

if __name__ == "__main__":
    main()
