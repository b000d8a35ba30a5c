"""The paper's ablations in one command: train every recipe in a folder (one TOML file per model) and
report them in one table, through `infp eval conversation` (issue 22; docs/evaluation.md).

    python scripts/ablations.py --recipes recipes/ablations --data-root ~/runs/data --runs ~/runs/ablations \
        --eval conv_eval conv_eval_real --out eval/ablations [--only full no_memory ...] \
        [--use full=CHECKPOINT ...] [--eval-args "--max-seconds 12 --no-image"] [--dry-run]

A recipe: `description`, an optional `[imitation]` table (stage 1 trained again: `data`, `args` of
`infp train imitation`) and a `[motion]` table (`data`, `args` of `infp train motion`; on the recipe's
own stage 1 when it has one, else the bundled one). `data` names folders under --data-root. Runs go
to RUNS/<recipe>/{imitation,motion}, stage 2's latents and features to one cache, RUNS/motion-cache,
unless a recipe names its own `--cache`; a run already there is resumed (`--resume`: it continues to its
own recorded plan, or returns at once when done), so the command can be stopped and run again. `--use
NAME=DIR` takes a stage-2 checkpoint made by the recipe elsewhere instead of training it. Recipes
whose motion hears one track (`--hears agent` / `--hears partner`) form the explicit-switching
baseline, evaluated as one model named `switching`. Models on the same stage 1 are evaluated by one
`infp eval conversation` run (OUT/<stage 1>/); the table merges them: OUT/ablations.md and .json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

BUNDLED = "bundled"
INFP = [sys.executable, "-m", "infp"]  # this interpreter's infp: the script need not run in an activated venv
COLUMNS = [  # (label, where in conversation.json, key)
    ("role contrast", "tracks", "role_contrast"), ("mouth ~ agent r", "tracks", "mouth_agent_r"),
    ("mouth ~ partner r", "tracks", "mouth_partner_r"), ("mouth ~ agent r, overlaps", "tracks", "mouth_agent_r_overlap"),
    ("mouth listening", "tracks", "mouth_listening"), ("nod r listening", "tracks", "nod_r_listening"),
    ("head speed", "tracks", "head_speed"), ("switch jump", "tracks", "switch_jump"), ("join jump", "tracks", "join_jump"),
    ("FD pose", "pose", "fd"), ("FD expression", "expression", "fd"), ("pFD expression", "expression", "paired_fd"),
    ("rPCC expression", "expression", "rpcc"), ("SID expression", "expression", "sid"),
    ("fast power latent", "latent", "fast"), ("LPIPS", "image", "lpips"),
]


def load_recipes(folder: Path, only: list[str] | None) -> dict[str, dict]:
    recipes = {p.stem: tomllib.loads(p.read_text()) for p in sorted(folder.glob("*.toml"))}
    if only:
        missing = [n for n in only if n not in recipes]
        if missing:
            sys.exit(f"ablations: no recipe {', '.join(missing)} in {folder} (there are: {', '.join(recipes)})")
        recipes = {n: recipes[n] for n in only}
    for name, r in recipes.items():
        if "motion" not in r:
            sys.exit(f"ablations: recipe {name} has no [motion] table")
    return recipes


def _train(stage: str, table: dict, out: Path, data_root: Path, extra: list[str], run) -> Path:
    """Train (or resume) one stage of a recipe; its checkpoint directory."""
    if (out / "run.json").is_file():
        cmd = [*INFP, "train", stage, "--out", str(out), "--resume"]
    else:
        data = [str(data_root / d) for d in table["data"]]
        cmd = [*INFP, "train", stage, "--data", *data, "--out", str(out), *shlex.split(table["args"]), *extra]
    run(cmd)
    return out / "checkpoint"


def hears(table: dict) -> str:
    args = shlex.split(table["args"])
    return args[args.index("--hears") + 1] if "--hears" in args else "both"


def train_all(recipes: dict[str, dict], runs: Path, data_root: Path, use: dict[str, Path], run) -> dict[str, tuple[str, Path]]:
    """{recipe: (stage 1 checkpoint or BUNDLED, stage 2 checkpoint)}."""
    out = {}
    for name, r in recipes.items():
        imitator = BUNDLED
        if "imitation" in r:
            imitator = str(_train("imitation", r["imitation"], runs / name / "imitation", data_root, [], run))
        if name in use:
            out[name] = (imitator, use[name])
            continue
        extra = [] if imitator == BUNDLED else ["--imitator", imitator]
        if "--cache" not in shlex.split(r["motion"]["args"]):  # latents and features once for every recipe on
            extra += ["--cache", str(runs / "motion-cache")]  # the same data (keyed by clip and E_m: safe to share)
        out[name] = (imitator, _train("motion", r["motion"], runs / name / "motion", data_root, extra, run))
    return out


def evaluate(recipes: dict[str, dict], trained: dict[str, tuple[str, Path]], eval_dirs: list[Path], out: Path,
             eval_args: list[str], run) -> dict[str, Path]:
    """One `infp eval conversation` per stage 1; {stage 1: its report folder}."""
    groups: dict[str, list[str]] = {}
    for name, (imitator, _) in trained.items():
        groups.setdefault(imitator, []).append(name)
    reports = {}
    for k, (imitator, names) in enumerate(groups.items()):
        unified = [n for n in names if hears(recipes[n]["motion"]) == "both"]
        by_track = {hears(recipes[n]["motion"]): n for n in names if hears(recipes[n]["motion"]) != "both"}
        folder = out / ("bundled_stage1" if imitator == BUNDLED else f"stage1_{names[0]}")
        cmd = [*INFP, "eval", "conversation", "--data", *map(str, eval_dirs), "--out", str(folder)]
        if imitator != BUNDLED:
            cmd += ["--imitator", imitator]
        if unified:
            cmd += ["--checkpoint", *(str(trained[n][1]) for n in unified), "--names", *unified]
        if {"agent", "partner"} <= set(by_track):
            cmd += ["--switching", str(trained[by_track["agent"]][1]), str(trained[by_track["partner"]][1])]
        if not unified and "--switching" not in cmd:
            continue
        run(cmd + eval_args)
        reports[imitator] = folder
    return reports


def merge(recipes: dict[str, dict], reports: dict[str, Path], out: Path) -> str:
    """One table over every report: OUT/ablations.md and OUT/ablations.json."""
    rows = {}
    for imitator, folder in reports.items():
        r = json.loads((folder / "conversation.json").read_text())
        for model in r["models"]:
            values = {}
            for label, where, key in COLUMNS:
                src = r["tracks"] if where == "tracks" else r["image"] if where == "image" else r["dyadic"].get(model, {})
                entry = src.get(model) if where in ("tracks", "image") else src.get(where)
                values[label] = entry.get(key) if entry else None
            desc = recipes[model]["description"] if model in recipes else "explicit switching (speaker + listener)"
            rows[model] = {"description": desc, "stage1": imitator, "report": str(folder), **values}
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"  # noqa: E731
    lines = ["# Ablations", "", "| model | " + " | ".join(label for label, _, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {m} ({v['description']}) | " + " | ".join(fmt(v[label]) for label, _, _ in COLUMNS) + " |"
              for m, v in rows.items()]
    lines += ["", "Each model's report (plots, per-clip numbers): " + ", ".join(f"`{f}`" for f in reports.values())]
    md = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablations.md").write_text(md)
    (out / "ablations.json").write_text(json.dumps(rows, indent=2) + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", type=Path, default=Path(__file__).resolve().parents[1] / "recipes" / "ablations")
    p.add_argument("--data-root", type=Path, required=True, help="the folder the recipes' data names are in")
    p.add_argument("--runs", type=Path, required=True, help="where the training runs go (outside the repository)")
    p.add_argument("--eval", type=Path, nargs="+", required=True, help="held-out clip folders (under --data-root or paths)")
    p.add_argument("--out", type=Path, required=True, help="folder for the reports and the merged table")
    p.add_argument("--only", nargs="+", default=None, help="these recipes only (default: every file in --recipes)")
    p.add_argument("--use", nargs="+", default=[], metavar="NAME=DIR", help="a stage-2 checkpoint made by recipe NAME elsewhere")
    p.add_argument("--eval-args", default="", help="more options for infp eval conversation, quoted")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    recipes = load_recipes(args.recipes, args.only)
    use = dict(u.split("=", 1) for u in args.use)
    use = {k: Path(v) for k, v in use.items()}

    def run(cmd: list[str]) -> None:
        print("+", shlex.join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)

    trained = train_all(recipes, args.runs, args.data_root, use, run)
    eval_dirs = [d if d.is_absolute() or d.exists() else args.data_root / d for d in args.eval]
    reports = evaluate(recipes, trained, eval_dirs, args.out, shlex.split(args.eval_args), run)
    if not args.dry_run:
        print(merge(recipes, reports, args.out), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
