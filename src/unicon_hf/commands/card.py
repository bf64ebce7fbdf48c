"""`unicon card`: write a model card (README.md) from a model folder and its continual report, or from a stage
plan (a recipe card, without results)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "card",
        help="write the model card (README.md) of a model folder from its config and continual report",
        description="Write README.md for a UNICON model repo: Hub metadata with a model-index of each task's metric, "
        "intended use, the input specification, every task with its size and stage, the forgetting matrix, "
        "limitations and citation. Numbers come from the run's report.json only. With --recipe PLAN, write the card "
        "of a stage plan that has not been run (no results).",
    )
    parser.add_argument("model_dir", nargs="?", default=None, help="saved model folder (e.g. runs/demo/model)")
    parser.add_argument("--recipe", default=None, metavar="PLAN", help="stage plan YAML: write a recipe card instead")
    parser.add_argument("--repo-id", default=None, help="Hub repo id for the title and usage (default: folder name)")
    parser.add_argument("--report", default=None, help="report.json (default: MODEL_DIR/report.json)")
    parser.add_argument("--no-report", action="store_true", help="allow a card without results (no report found)")
    parser.add_argument("--output", default=None, help="where to write (default: MODEL_DIR/README.md)")
    parser.add_argument("--license", default="apache-2.0", help="license id for the front matter (default apache-2.0)")
    parser.add_argument("--base-model", default=None, help="Hub id of the foundation the model was grown from")
    parser.add_argument("--dataset", action="append", default=None, dest="datasets", metavar="HUB_ID",
                        help="Hub dataset id for the front matter (repeatable; default: from the report's plan)")
    parser.add_argument("--template", default=None, help="another Jinja card template")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import UserInputError
    from ..model_card import render_recipe_card, write_card

    if args.recipe:
        if not args.repo_id or not args.output:
            raise UserInputError("--recipe needs --repo-id (the repo the recipe is for) and --output (where to write)")
        text = render_recipe_card(args.recipe, args.repo_id, license=args.license, base_model=args.base_model,
                                  template=args.template)
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    else:
        if not args.model_dir:
            raise UserInputError("give a model folder (unicon card MODEL_DIR) or a plan (unicon card --recipe PLAN)")
        output = write_card(args.model_dir, args.output, repo_id=args.repo_id, report=args.report,
                            license=args.license, base_model=args.base_model, datasets=args.datasets,
                            template=args.template, require_report=not args.no_report)
    print(f"wrote {output}")
    return 0
