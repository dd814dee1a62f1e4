"""devstack command line - what the Makefile calls.

    python -m devstack run [--offline]      start the whole local stack in the foreground
    python -m devstack airflow ARGS...       the Airflow CLI against the running local stack
    python -m devstack exec [--offline] CMD  any command with the local stack's Airflow environment
    python -m devstack offline-env          rewrite .env.offline (astro dev start --env .env.offline)
    python -m devstack credentials          the local stack's logins and generated passwords
    python -m devstack docker-env           generate .local/docker/*.env for astro dev start
"""

import argparse
import os
import sys

from devstack import credentials
from devstack.stack import ROOT, StackConfig, airflow_env, credentials_banner, offline_env_text, run_forever


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the whole local stack in the foreground (Ctrl-C stops it)")
    run.add_argument("--offline", action="store_true", help="point every third-party API at the local stand-ins")
    cli = sub.add_parser("airflow", help="run an Airflow CLI command against the local stack (started by make run)")
    cli.add_argument("args", nargs=argparse.REMAINDER)
    run_cmd = sub.add_parser("exec", help="run a command with the local stack's Airflow environment")
    run_cmd.add_argument("--offline", action="store_true", help="the environment of `make run OFFLINE=1`")
    run_cmd.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("offline-env", help="rewrite .env.offline from .env and airflow_settings.yaml")
    sub.add_parser("credentials", help="print the local stack's logins and generated passwords")
    sub.add_parser("docker-env", help="generate the credentials of astro dev start's servers (.local/docker)")
    args = parser.parse_args()
    if args.command == "credentials":
        cfg = StackConfig.for_run(offline=False)
        if not (credentials.secrets_dir(cfg.state_dir) / credentials.FILE_NAME).exists():
            print(f"No credentials in {credentials.secrets_dir(cfg.state_dir)} yet: `make run` generates them "
                  "on its first start.", file=sys.stderr)
            return 1
        print(credentials_banner(cfg, everything=True))
        return 0
    if args.command == "docker-env":
        from devstack.docker_env import write_docker_env  # noqa: PLC0415

        folder = write_docker_env(ROOT)
        print(f"wrote {', '.join(sorted(p.name for p in folder.glob('*.env')))} in {folder} (mode 600): "
              "`astro dev start` reads them (docker-compose.override.yml)")
        return 0
    if args.command == "offline-env":
        (ROOT / ".env.offline").write_text(offline_env_text())
        print(f"wrote {ROOT / '.env.offline'}")
        return 0
    if args.command == "run":
        return run_forever(offline=args.offline)
    if args.command == "airflow":
        env = airflow_env(StackConfig.for_run(offline=False))
        os.execvpe(sys.executable, [sys.executable, "-m", "airflow", *args.args], env)  # noqa: S606
    if args.command == "exec":
        env = airflow_env(StackConfig.for_run(offline=args.offline))
        command = args.args[1:] if args.args[:1] == ["--"] else args.args
        os.execvpe(command[0], command, env)  # noqa: S606
    return 2


if __name__ == "__main__":
    sys.exit(main())
