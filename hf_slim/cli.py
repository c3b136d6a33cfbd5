"""The `hf-slim` command line."""

from __future__ import annotations

import argparse
import json
import platform
import sys


def _env(_: argparse.Namespace) -> int:
    import importlib.metadata as metadata

    from . import __version__, supported_model_types

    info = {"hf_slim": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for package in ("torch", "transformers", "accelerate", "datasets", "evaluate", "optimum", "onnxruntime"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    info["supported_model_types"] = supported_model_types()
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-slim",
        description="Distil, prune and quantize Hugging Face transformer models.",
    )
    parser.add_argument("--version", action="store_true", help="print the hf_slim version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    env = commands.add_parser("env", help="print hf_slim, library versions and supported architectures")
    env.set_defaults(func=_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
