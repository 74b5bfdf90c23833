"""``python -m visionlab ...`` (the usual way to launch a package under torchrun: ``torchrun -m visionlab``)."""

from visionlab.cli import main

if __name__ == "__main__":
    main()
