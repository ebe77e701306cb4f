"""``python -m simulators.llm``: run the demo upstream (options in :mod:`simulators.llm.cli`)."""

from .cli import main

if __name__ == "__main__":
    main()
