"""The `hf-slim` command line."""

from __future__ import annotations

import argparse
import json
import platform
import sys

SINGLE_STAGES = ("distill", "prune", "quantize", "evaluate")


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


def _run(args: argparse.Namespace) -> int:
    from .recipes.runner import run_recipe
    from .recipes.schema import load_recipe

    recipe = load_recipe(args.recipe, args.set)  # validated before anything is written
    output_dir = args.output_dir or f"outputs/{recipe.name or 'run'}"
    report = run_recipe(recipe, output_dir, overwrite=args.overwrite)
    if report:  # only the main process reports under accelerate launch
        from .recipes.report import format_markdown_table

        print(format_markdown_table(report))
        print(f"\nReport: {output_dir}/report.md, {output_dir}/report.json, {output_dir}/tradeoff.png")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .recipes.schema import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    stages = ", ".join(stage.kind for stage in recipe.stages)
    print(f"{args.recipe}: valid ({recipe.task}, stages: {stages})")
    return 0


def _single(args: argparse.Namespace) -> int:
    """One stage of a recipe applied to a given model: the recipe supplies the data and the stage's options."""
    from .recipes.runner import run_recipe
    from .recipes.schema import RecipeError, load_recipe, read_recipe_file

    raw = read_recipe_file(args.recipe)
    stages = [s for s in raw.get("stages", []) if (s if isinstance(s, str) else next(iter(s))) == args.command]
    if not stages:
        stages = [{args.command: {}}]
    raw = {**raw, "model": args.model, "stages": stages[:1]}
    raw.pop("teacher", None) if args.command != "distill" else None
    recipe = load_recipe(raw, args.set)
    if recipe.stages[0].kind != args.command:
        raise RecipeError(f"--set changed the stage to {recipe.stages[0].kind}; expected {args.command}.")
    output_dir = args.output_dir or f"outputs/{args.command}"
    report = run_recipe(recipe, output_dir, overwrite=args.overwrite)
    if report:
        from .recipes.report import format_markdown_table

        print(format_markdown_table(report))
    return 0


def _push(args: argparse.Namespace) -> int:
    from .hub import push_to_hub

    manifest = push_to_hub(
        args.source,
        args.repo_id,
        private=args.private,
        dry_run=args.dry_run,
        folder=args.folder,
        base_model=args.base_model,
    )
    if args.dry_run:
        print(f"Upload folder: {manifest['folder']}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .recipes.report import render_report

    paths = render_report(args.output_dir)
    for path in paths.values():
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-slim",
        description="Distil, prune and quantize Hugging Face transformer models.",
    )
    parser.add_argument("--version", action="store_true", help="print the hf_slim version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run a recipe: every stage, resumable, with a compression report")
    run.add_argument("recipe", help="recipe YAML file (see recipes/)")
    run.add_argument("--output-dir", help="where stage outputs and the report go (default: outputs/RECIPE_NAME)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set stages[1].distill.temperature=4 (repeatable)",
    )
    run.add_argument("--overwrite", action="store_true", help="replace an output dir that holds another run")
    run.set_defaults(func=_run)

    validate = commands.add_parser("validate", help="check a recipe without running it")
    validate.add_argument("recipe")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    validate.set_defaults(func=_validate)

    for name in SINGLE_STAGES:
        single = commands.add_parser(
            name,
            help=f"run one {name} stage on MODEL, with data and options from a recipe",
            description=f"Run the first {name} stage of RECIPE (or a default one) on MODEL. The recipe supplies the "
            "task and the dataset; --set overrides options, e.g. --set stages[0]." + name + ".KEY=VALUE.",
        )
        single.add_argument("model", help="model folder or Hub id")
        single.add_argument("--recipe", required=True, help="recipe YAML with the task, dataset and stage options")
        single.add_argument("--output-dir", help=f"default: outputs/{name}")
        single.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        single.add_argument("--overwrite", action="store_true")
        single.set_defaults(func=_single)

    report = commands.add_parser("report", help="re-render report.md and tradeoff.png from a run's report.json")
    report.add_argument("output_dir")
    report.set_defaults(func=_report)

    push = commands.add_parser(
        "push",
        help="publish a run / model folder to the Hub with a generated model card",
        description="Upload the compressed PyTorch model (safetensors, config, preprocessor) and, when present, the "
        "int8 ONNX model under onnx/, with a model card built from the run's measured report, in one commit. The "
        "token comes from HF_TOKEN or the cached login (huggingface-cli login) and is never printed.",
    )
    push.add_argument("source", help="an hf-slim run output dir, or a saved model folder")
    push.add_argument("--repo-id", required=True, help="namespace/name on the Hub")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--dry-run", action="store_true", help="write the upload folder and list it; send nothing")
    push.add_argument("--folder", help="where to write the upload folder (default: a temporary folder)")
    push.add_argument("--base-model", help="Hub id of the model this one derives from, for the card")
    push.set_defaults(func=_push)

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
    from .errors import HfSlimError

    try:
        return args.func(args)
    except HfSlimError as err:
        print(f"hf-slim: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
