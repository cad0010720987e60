"""`python -m cpcl ...` is the `cpcl` console script."""

from cpcl.cli import run

if __name__ == "__main__":
    run()
