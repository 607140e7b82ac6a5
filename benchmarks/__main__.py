import sys

from benchmarks.runner import main

if __name__ == "__main__":  # spawned load clients re-import this module as __mp_main__
    sys.exit(main())
