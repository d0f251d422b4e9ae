"""`imgsteal study ...`: build, run, export and analyse the user study (paper, section 5.4)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imgsteal.cli._common import UserError, user_errors

study_app = typer.Typer(help="User study: questionnaire web app, ratings export, Welch t-test and TOST.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")


def _per_task(values: List[str], n: int, option: str) -> List[Optional[str]]:
    """Repeated options are matched to tasks by position; one value applies to every task."""
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise UserError(f"{option} was given {len(values)} times for {n} tasks; give it once or once per --task")
    return list(values)


@study_app.command("create")
def create(
    out: Path = typer.Option(..., "--out", help="New study folder (must not exist or be empty)."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="YAML study spec (tasks, title, intro, pairs, ...)."),
    experiment: Optional[Path] = typer.Option(None, "--experiment", help="An experiment or demo folder: its style "
                                              "tasks' inputs and F_V / F_A outputs (instead of --spec or --task)."),
    task: List[str] = typer.Option([], "--task", help="Task name; repeat for several tasks."),
    originals: List[Path] = typer.Option([], "--originals", help="Folder of unstyled inputs (one per --task)."),
    victim: List[Path] = typer.Option([], "--victim", help="Folder of F_V outputs, same file stems (one per --task)."),
    surrogate: List[Path] = typer.Option([], "--surrogate", help="Folder of F_A outputs, same file stems (one per --task)."),
    style: List[str] = typer.Option([], "--style", help="Target style as participants read it, e.g. 'Monet painting' (once, or per --task)."),
    style_examples: List[Path] = typer.Option([], "--style-examples", help="Folder of example images of the target style (once, or per --task)."),
    pairs: Optional[int] = typer.Option(None, "--pairs", help="Pairs per task [paper: 20]."),
    victim_share: Optional[float] = typer.Option(None, "--victim-share", help="Share of pairs styled by F_V [paper: 0.5]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for choosing the pairs [0]."),
    title: Optional[str] = typer.Option(None, "--title", help="Study title shown to participants."),
    intro: Optional[Path] = typer.Option(None, "--intro", help="Text file with the introduction (blank lines separate paragraphs)."),
    order: Optional[str] = typer.Option(None, "--order", help="'blocked' (tasks kept together) or 'mixed'."),
    no_demographics: bool = typer.Option(False, "--no-demographics", help="Do not ask gender, age and education."),
) -> None:
    """Build a self-contained study folder from originals and F_V / F_A outputs matched by file stem."""
    with user_errors():
        import warnings

        from imgsteal.study.create import StudySpec, TaskSpec, create_study

        if sum([spec is not None, bool(task), experiment is not None]) > 1:
            raise UserError("give one of --spec, --experiment or --task options")
        if experiment is not None:
            from imgsteal.study.create import tasks_from_experiment

            study_spec = StudySpec(tasks=tasks_from_experiment(experiment))
        elif spec is not None:
            study_spec = StudySpec.from_yaml(spec)
        else:
            if not task:
                raise UserError("give --spec FILE, --experiment FOLDER, or at least one --task with --originals, "
                                "--victim and --surrogate")
            n = len(task)
            for values, name in ((originals, "--originals"), (victim, "--victim"), (surrogate, "--surrogate")):
                if len(values) != n:
                    raise UserError(f"{name} must be given once per --task ({n} times), got {len(values)}")
            styles = _per_task(style, n, "--style")
            examples = _per_task([str(p) for p in style_examples], n, "--style-examples")
            tasks = [
                TaskSpec(name=task[i], originals=originals[i], victim=victim[i], surrogate=surrogate[i], style=styles[i], style_examples=examples[i])
                for i in range(n)
            ]
            study_spec = StudySpec(tasks=tasks)
        overrides = {"pairs": pairs, "victim_share": victim_share, "seed": seed, "title": title, "order": order}
        updates = {k: v for k, v in overrides.items() if v is not None}
        if intro is not None:
            updates["intro"] = intro.read_text(encoding="utf-8")
        if no_demographics:
            updates["ask_demographics"] = False
        study_spec = StudySpec.model_validate({**study_spec.model_dump(), **updates})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            study = create_study(study_spec, out)
        for w in caught:
            typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)
        for t in study.tasks:
            n_v = sum(1 for i in study.items if i.task == t.name and i.source.value == "victim")
            n_a = sum(1 for i in study.items if i.task == t.name and i.source.value == "surrogate")
            typer.echo(f"task {t.name}: {n_v} F_V + {n_a} F_A pairs, {len(t.example_images)} style examples")
        typer.echo(f"study written to {out} ({len(study.items)} items); run: imgsteal study serve {out}")


@study_app.command("serve")
def serve(
    study_dir: Path = typer.Argument(..., help="Study folder made by `study create`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port (0 picks a free one)."),
    root_path: str = typer.Option("", "--root-path", help="URL prefix when served behind a reverse proxy."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
) -> None:
    """Run the questionnaire web page; prints the participant URL, the results URL and the admin key."""
    with user_errors():
        from imgsteal.study.serve import serve_study

        def announce(participant_url: str, admin_url: str, admin_key: str) -> None:
            typer.echo(f"participants: {participant_url}")
            typer.echo(f"results: {admin_url} (sign in with the admin key)")
            typer.echo(f"admin key (keep private): {admin_key}")
            typer.echo("press Ctrl+C to stop")

        serve_study(study_dir, host=host, port=port, root_path=root_path, log_level=log_level, on_ready=announce)


@study_app.command("export")
def export(
    study_dir: Path = typer.Argument(..., help="Study folder."),
    out: Path = typer.Option(..., "--out", help="CSV file to write."),
    finished_only: bool = typer.Option(False, "--finished-only", help="Only participants who rated every item."),
) -> None:
    """Write all ratings as CSV (participant, task, item, source, rating, answered_at, position, demographics)."""
    with user_errors():
        from imgsteal.study.export import export_ratings

        rows = export_ratings(study_dir, out, finished_only=finished_only)
        typer.echo(f"{rows} ratings written to {out}")


@study_app.command("analyze")
def analyze(
    ratings: Path = typer.Argument(..., help="ratings.csv from `study export`."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for results.json and the plots."),
    bound_d: float = typer.Option(0.3, "--bound-d", help="TOST equivalence bound in Cohen's d (symmetric)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level."),
    finished_only: bool = typer.Option(False, "--finished-only", help="Ignore participants who did not finish."),
) -> None:
    """Per task: mean/std/n of F_V and F_A, Welch's t-test, TOST, smallest equivalence bound; plots."""
    with user_errors():
        from imgsteal.study.analyze import analyze_ratings, format_report, read_ratings_csv, write_results

        analysis = analyze_ratings(read_ratings_csv(ratings), bound_d=bound_d, alpha=alpha, finished_only=finished_only)
        typer.echo(format_report(analysis), nl=False)
        if out is not None:
            from imgsteal.study.plots import plot_demographics, plot_scores

            written = [write_results(analysis, out), *plot_scores(analysis, out), *plot_demographics(analysis, out)]
            typer.echo("wrote " + ", ".join(str(p) for p in written))
