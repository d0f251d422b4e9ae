"""`python -m imgsteal ...`: the same command line as the `imgsteal` script."""

from imgsteal.cli import main

if __name__ == "__main__":
    main()
