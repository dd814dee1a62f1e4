"""`python -m devstack run [--offline]` - what `make run` calls."""

import argparse
import sys

from devstack.stack import run_forever


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the whole local stack in the foreground (Ctrl-C stops it)")
    run.add_argument("--offline", action="store_true", help="point every third-party API at the local stand-ins")
    args = parser.parse_args()
    if args.command == "run":
        return run_forever(offline=args.offline)
    return 2


if __name__ == "__main__":
    sys.exit(main())
