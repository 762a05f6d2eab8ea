"""``python -m dicomnet``: the same as the ``dicomnet`` command."""

from dicomnet.cli.main import main

if __name__ == "__main__":
    main(prog_name="dicomnet")
