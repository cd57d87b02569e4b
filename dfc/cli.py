"""The `dfc` command line (Typer): run, check, nll, bench, train, fmt, presets.

Every error a user can cause is a `DfcError`: printed as one paragraph with its place, exit
code 2, no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from dfc.clikit import THREADS_HELP, err_console, out_console
from dfc.clikit import guard as _guard
from dfc.clikit import pairs as _pairs
from dfc.errors import ConfigError
from dfc.executors import HELP as EXECUTOR_HELP
from dfc.train_cli import app as train_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="dfc: compile, run, check and benchmark points of the DiffFlow spectrum.")

def _print_version(value: bool) -> None:
    if value:
        from dfc import __version__

        out_console.print(f"dfc {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print dfc's version and exit.")):
    """dfc: compile, run, check and benchmark points of the DiffFlow spectrum."""


SPEC_ARG = typer.Argument(..., help="A .dfs or .yaml spec file, or a preset name (e.g. ve_sde).")
SET_OPT = typer.Option(None, "--set", help="Override a param: --set kappa=0.5 (repeatable).")
THREADS_OPT = typer.Option(None, "--threads", help=THREADS_HELP)


@app.command()
def run(
    spec: str = SPEC_ARG,
    set_: Optional[List[str]] = SET_OPT,
    target: Optional[str] = typer.Option(None, help="ring8, grid25, checkerboard, moons, swissroll, circles, digits, gaussian(...), gmm(...), or FILE.npy"),
    fields: Optional[str] = typer.Option(None, help="exact or learned(score = \"FILE\"), optionally + kde | gauss | closed | disc(path = \"FILE\")"),
    steps: Optional[int] = typer.Option(None, help="Number of time steps."),
    solver: Optional[str] = typer.Option(None, help="euler | heun | ddim | dpmpp_2m | dpmpp_2m_sde | dpmpp_3m | "
                                         "dpmpp_3m_sde | expint_2m | expint_3m (native, MATH §11) | deis_2m | "
                                         "deis_3m (MATH §12); euler | milstein | srk (torchsde); `dfc solvers` "
                                         "lists them"),
    backend: Optional[str] = typer.Option(None, help="native | torchsde"),
    grid: Optional[str] = typer.Option(None, help="uniform | karras(rho = 7)"),
    clock: Optional[str] = typer.Option(None, help="t | sigma | sigma2 | logsigma (MATH §9)"),
    samples: Optional[int] = typer.Option(None, help="Number of particles."),
    seed: Optional[int] = typer.Option(None, help="Random seed (same seed, same samples)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ..."),
    denoise: Optional[bool] = typer.Option(None, "--denoise/--no-denoise", help="Finish with Tweedie's denoising step."),
    run_: Optional[List[str]] = typer.Option(None, "--run", help="Any other run entry: --run time=[0,0.5]"),
    out: Path = typer.Option(None, help="Output folder (default runs/SPEC_NAME)."),
    metrics: str = typer.Option("auto", "--metrics", help="full (exact MMD and energy, O(N²)) | fast (block "
                                "estimates with standard errors) | none | auto (full up to 4096 samples)."),
    threads: Optional[int] = THREADS_OPT,
):
    """Sample a spec against its target; write samples.npy, metrics.json and samples.png."""

    def body():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from dfc.floors import LEVELS
        from dfc.sample import build, check_out_folder, run as run_spec, write_outputs

        level = metrics.strip().lower()
        if level not in LEVELS:
            raise ConfigError(f"--metrics {metrics!r} is not a metrics level; choose one of {', '.join(LEVELS)}.",
                              None, "full: exact MMD and energy distance (O(N²)); fast: block estimates with "
                                    "standard errors; none: no metrics; auto: full up to 4096 samples, else fast.")
        overrides = _pairs(run_, "--run")
        for key, value in (("target", target), ("fields", fields), ("steps", steps), ("solver", solver),
                           ("backend", backend), ("grid", grid), ("clock", clock), ("samples", samples),
                           ("seed", seed), ("device", device)):
            if value is not None:
                overrides[key] = value  # typed (Typer's int, str); validated once per key (dfc.runconfig)
        if denoise is not None:
            overrides["denoise"] = denoise
        compiled = build(spec, _pairs(set_, "--set"), overrides)
        folder = out if out is not None else Path("runs") / compiled.name
        check_out_folder(folder)  # before sampling: a folder that cannot be written, or is not the run's own
        steps_total = compiled.run.steps
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                      TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task(f"sampling {compiled.name}", total=steps_total, detail=f"0/{steps_total}")
            measuring = []

            def sampled(i):
                bar.update(task, completed=i, detail=f"{i}/{steps_total}")

            def measured(what, fraction):  # after sampling: what is being computed, and how far
                if not measuring:
                    bar.update(task, visible=False)
                    measuring.append(bar.add_task(what, total=1.0, detail=""))
                bar.update(measuring[0], description=what, completed=fraction, detail=f"{100 * fraction:3.0f}%")

            result = run_spec(compiled, progress=sampled, metrics=level, metrics_progress=measured, threads=threads)
        paths = write_outputs(result, folder)
        _summary(result, paths)

    _guard(body)


def _summary(result, paths) -> None:
    m = result.metrics
    table = Table(title=f"dfc run {result.spec.name}", show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    cfg = m["run"]
    table.add_row("target", str(cfg["target"]))
    table.add_row("fields", str(cfg["fields"]))
    table.add_row("solver / clock / grid", f"{cfg['solver']} ({cfg['backend']}) / {cfg['clock']} / {cfg['grid']}")
    table.add_row("samples × dim", f"{m['samples']} × {m['dim']}")
    table.add_row("steps / NFE", f"{m['steps']} / {m['nfe']}")
    table.add_row("wall time", f"{m['wall_s']:.3f} s")
    level = m.get("metrics_level", "full")
    if level == "none":
        table.add_row("metrics", "none (--metrics none)")
    else:
        cached = ", floor cached" if m.get("floor_cached") else ""
        table.add_row("metrics", f"{level}, {m.get('metrics_s', 0.0):.2f} s{cached}")
        for name, key, floor in (("sliced W2", "sliced_w2", "floor"), ("MMD", "mmd", "mmd_floor"),
                                 ("MMD²", "mmd2", "mmd2_floor"), ("energy distance", "energy", "energy_floor"),
                                 ("energy distance²", "energy2", "energy2_floor")):
            if key in m:
                table.add_row(f"{name} ± se (floor ± sd)",
                              f"{_pm(m[key], m.get(key + '_se'))} ({_pm(m.get(floor), m.get(floor + '_sd'))})")
    out_console.print(table)
    far = _far_from_target(m)
    if far:
        err_console.print(far, style="yellow", highlight=False, markup=False, soft_wrap=True)
    for name, p in paths.items():
        out_console.print(f"  {name}: {p}", highlight=False)


FAR = 4.0  # sliced W2 above FAR × its floor: the run's note says the samples are far from the target


def _far_from_target(m: dict) -> str | None:
    """A note when the run's sliced W2 is more than FAR times its floor: a run that finished (no blow-up)
    but whose samples are far from the target, which a reader of the table could miss."""
    w, floor = m.get("sliced_w2"), m.get("floor")
    if w is None or not floor or not w > FAR * floor:
        return None
    return (f"note: sliced W2 is {w / floor:.0f}× its floor: these samples are far from the target. If that is not "
            f"what this spec is for: more --steps, or another --solver (`dfc solvers`); at few steps an SDE spec "
            f"with heun, or a large GAN weight, can be unstable without blowing up (README, Command line).")


def _num(v) -> str:
    if v is None:
        return "–"
    return f"{v:.2e}" if v != 0 and abs(v) < 1e-3 else f"{v:.4f}"


def _pm(value, se) -> str:
    """`value ± se`, or the value alone when it has no standard error."""
    return _num(value) if se is None else f"{_num(value)} ± {_num(se)}"


@app.command()
def check(
    specs: List[str] = typer.Argument(..., help="One spec to explain, or two to compare marginal classes."),
    set_: Optional[List[str]] = SET_OPT,
    latex: bool = typer.Option(True, "--latex/--no-latex", help="Print the LaTeX of the SDE."),
):
    """Explain a spec (decomposition, marginal class, tracking, LaTeX); reject an ill-posed one."""

    def body():
        from dfc.explain import report, same_marginal_class, same_path
        from dfc.sample import build

        if len(specs) > 2:
            raise ConfigError("dfc check takes one spec, or two to compare.")
        sets = _pairs(set_, "--set")
        compiled = [build(s, sets if i == 0 else {}) for i, s in enumerate(specs)]
        for c in compiled:
            _print_report(report(c), latex)
        if len(compiled) == 2:
            same, reasons = same_marginal_class(*compiled)
            a, b = compiled[0].name, compiled[1].name
            if same:
                out_console.print(f"[green]{a} and {b} share a marginal class[/green] (f, β, λ², σ, u, p_0 agree): "
                                  "they have the same marginals p_t for every t (MATH §3).")
            else:
                out_console.print(f"[yellow]{a} and {b} are in different marginal classes[/yellow]: "
                                  + "; ".join(reasons) + ".")
                if same_path(*compiled):
                    out_console.print(f"Both meet the tracking condition with the same σ, u and time interval, so "
                                      f"on the same data, started at Q_0, both stay on the same Q_t (MATH §3): the "
                                      f"same marginals along that path, though not from every p_0.")

    _guard(body)


def _print_report(r: dict, latex: bool) -> None:
    c = out_console
    c.print(f"[bold]{r['name']}[/bold] — {r['description']}", highlight=False)
    chain = f" (extends {' → '.join(Path(p).stem for p in r['extends'])})" if r["extends"] else ""
    c.print(f"  file {r['file']}{chain}; time [{r['time'][0]:g}, {r['time'][1]:g}]", highlight=False)
    if r["params"]:
        c.print("  params: " + ", ".join(f"{k} = {v:g}" for k, v in r["params"].items()), highlight=False)
    c.print(f"  kind: {r['kind']}", highlight=False)
    d = r["decomposition"]
    table = Table(title="decomposition (MATH §2, eq. 28)", min_width=60, show_header=True, header_style="bold")
    table.add_column("term")
    table.add_column("formula", overflow="fold")
    table.add_row("weight decay f(x, t)", d["f"])
    table.add_row("GAN weight β − ½g²", d["gan_weight"])
    table.add_row("score weight ½g²", d["score_weight"])
    table.add_row("noise √(g² − λ²)", d["noise"])
    c.print(table)
    mc = Table(title="marginal class (MATH §3)", min_width=60, show_header=True, header_style="bold")
    mc.add_column("term")
    mc.add_column("formula", overflow="fold")
    for k, v in r["marginal_class"].items():
        mc.add_row(k, v)
    c.print(mc)
    c.print(f"  tracking condition {r['tracking']}", highlight=False)
    c.print(f"  linear part (MATH §11, drift = L x + c D + N): {r['linear_part']}", highlight=False)
    if r.get("tracking_note"):
        c.print(f"  {r['tracking_note']}", highlight=False)
    if r.get("end_law"):
        c.print(f"  end law: {r['end_law']}" + (f" {r['end_law_note']}" if r.get("end_law_note") else ""),
                highlight=False)
    if latex:
        c.print("  LaTeX:", highlight=False)
        c.print(r["latex"], markup=False, highlight=False)


@app.command()
def nll(
    spec: str = SPEC_ARG,
    set_: Optional[List[str]] = SET_OPT,
    target: Optional[str] = typer.Option(None, help="The fields' target (and, without --data, where points come from)."),
    data: Optional[Path] = typer.Option(None, help="Score the points of this .npy file instead of target draws."),
    fields: Optional[str] = typer.Option(None, help="exact + kde | gauss | closed: estimate s_p so (default: exact "
                                                     "s_p = s_Q where the tracking condition holds, else the run's)"),
    points: Optional[int] = typer.Option(None, help="Target draws to score (default 1000); with --data, its first N "
                                                    "points (default all)."),
    rtol: float = typer.Option(1e-5, help="Relative tolerance of the adaptive ODE solver (dopri5)."),
    atol: float = typer.Option(1e-5, help="Absolute tolerance of the adaptive ODE solver."),
    divergence: str = typer.Option("auto", help="auto | exact | hutchinson (auto: exact up to 8 dimensions)."),
    probes: int = typer.Option(1, help="Rademacher probes per evaluation for Hutchinson's estimator."),
    elbo: bool = typer.Option(True, "--elbo/--no-elbo", help="Also estimate the SDE's ELBO (MATH §7)."),
    elbo_steps: int = typer.Option(200, help="Euler–Maruyama steps of the ELBO's inference process."),
    elbo_scale: float = typer.Option(1.0, help="Inference drift a = scale · ν s_p (1: the exact time reversal)."),
    seed: int = typer.Option(0, help="Seed for the points, the probes and the ELBO's paths."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ..."),
    out: Path = typer.Option(None, help="Output folder (default runs/SPEC_NAME-nll)."),
    threads: Optional[int] = THREADS_OPT,
):
    """Exact log-likelihood through the flow-ODE twin, and the SDE's ELBO (MATH §3, §7)."""

    def body():
        from dfc.likelihood_report import likelihood_run, print_likelihood, write_likelihood
        from dfc.sample import build

        overrides = {k: str(v) for k, v in (("target", target), ("fields", fields), ("device", device),
                                            ("seed", seed)) if v is not None}
        compiled = build(spec, _pairs(set_, "--set"), overrides)
        if points is not None and points < 2:
            raise ConfigError(f"--points {points}: score at least 2 points.")
        from dfc.io import check_set_folder
        from dfc.likelihood_report import DEFAULT_POINTS, NLL_FILES

        folder = out if out is not None else Path("runs") / f"{compiled.name}-nll"
        check_set_folder(folder, NLL_FILES, "dfc nll")  # before the work, whose result could not be kept
        from dfc.likelihood import BATCH
        from dfc.threads import use_threads

        use_threads(min(points or DEFAULT_POINTS, BATCH) * 64, threads)  # batches of points through the flow's autograd graph
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), console=err_console, transient=True) as bar:
            tasks = {"nll": bar.add_task("exact NLL (flow-ODE twin)", total=1.0)}
            if elbo:
                tasks["elbo"] = bar.add_task("ELBO of the SDE", total=1.0)
            result = likelihood_run(compiled, data=data, n_points=points, rtol=rtol, atol=atol,
                                    divergence=divergence, probes=probes, elbo=elbo, elbo_steps=elbo_steps,
                                    elbo_scale=elbo_scale, seed=seed, prefer_estimate=fields is not None,
                                    progress=lambda task, f: bar.update(tasks[task], completed=min(f, 1.0)))
        paths = write_likelihood(result, folder)
        print_likelihood(result, paths, out_console)

    _guard(body)


SPEC_NFE, SPEC_SEEDS, SPEC_SAMPLES = "4,8,16,32", "0", 2000  # `dfc bench SPEC` alone: a first look


@app.command()
def bench(
    spec: Optional[str] = typer.Argument(None, help="A spec to benchmark (with --sweep for a family of them; with "
                                                    "--all, --quick or --suite, where it stands in that suite)."),
    all_: bool = typer.Option(False, "--all", help="The default suite: every preset and peer on five targets."),
    quick: bool = typer.Option(False, "--quick", help="The quick suite (a first look, under two minutes)."),
    suite: Optional[str] = typer.Option(None, help="A suite name in benchmarks/suites/ or a YAML path."),
    sweep: Optional[List[str]] = typer.Option(None, help="NAME=V1,V2,... (repeatable): every combination; NAME is a "
                                                         "param or a run entry (clock=sigma;sigma2 with ';')."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="NAME=VALUE for every cell of SPEC (a param or a "
                                                                "run entry; repeatable)."),
    target: Optional[List[str]] = typer.Option(None, help="Targets for SPEC (repeatable; default its run target)."),
    nfe: Optional[str] = typer.Option(None, help=f"NFE budgets for SPEC, comma separated (default {SPEC_NFE})."),
    seeds: Optional[str] = typer.Option(None, help=f"Seeds for SPEC, comma separated (default {SPEC_SEEDS})."),
    samples: Optional[int] = typer.Option(None, help=f"Samples per cell for SPEC (default {SPEC_SAMPLES})."),
    peers: Optional[bool] = typer.Option(None, "--peers/--no-peers", help="Add the peers (k-diffusion's samplers, "
                                                                        "diffusers' schedulers) to a SPEC benchmark "
                                                                        "(default: peers)."),
    jobs: int = typer.Option(1, help="Cells run in this many parallel processes (with --executor dask: workers)."),
    executor: str = typer.Option("local", help=EXECUTOR_HELP),
    report_only: bool = typer.Option(False, "--report", help="Only regenerate RESULTS.md from the latest default "
                                                             "results."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results and cache folder (default: benchmarks/results "
                                                           "in dfc's source tree, else ./bench-results)."),
):
    """Quality against NFE and wall time across the spectrum and its peers (cached, resumable)."""

    def body():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from dfc import bench as b
        from dfc.peers import PEERS

        results = b.results_dir(out)
        results_md = b.results_md(results)
        if report_only:
            out_console.print(f"wrote {b.report(results / 'default', results_md)}", highlight=False)
            return
        suites = [flag for flag, given in (("--all", all_), ("--quick", quick), ("--suite", suite)) if given]
        if len(suites) > 1 or (spec is None and not suites):
            raise ConfigError("dfc bench takes SPEC, one suite (--all, --quick, --suite NAME), or SPEC with one suite "
                              "(where SPEC stands in it), or --report.")
        if (sweep or set_) and spec is None:
            raise ConfigError("--sweep and --set apply to a SPEC benchmark.", None,
                              "Write e.g. dfc bench diffusion_gan --sweep kappa=0,0.5,1.")
        if jobs < 1:
            raise ConfigError(f"--jobs {jobs}: at least 1.")
        from dfc.executors import parse, unfinished

        where = parse(executor)
        sweeps = b.parse_sweeps(sweep or [], _pairs(set_, "--set"))
        own: list[str] = []  # SPEC's rows, when it joins a suite
        if suites:
            chosen = b.load_suite("default" if all_ else "quick" if quick else suite)
            if spec is not None:
                mine = [flag for flag, given in (("--target", bool(target)), ("--nfe", nfe is not None),
                                                 ("--seeds", seeds is not None), ("--samples", samples is not None),
                                                 ("--peers/--no-peers", peers is not None)) if given]
                if mine:
                    raise ConfigError(f"{', '.join(mine)} set(s) a benchmark of SPEC alone; with {suites[0]} SPEC runs "
                                      f"on the suite's targets, NFE budgets, seeds and samples, beside its rows.", None,
                                      f"Drop {', '.join(mine)}, or run `dfc bench {spec}` without {suites[0]}.")
                chosen, own = b.join_suite(chosen, spec, sweeps)
        else:
            from dfc.sample import build

            b.check_sweeps(spec, sweeps)
            nfe_text = SPEC_NFE if nfe is None else nfe
            seeds_text = SPEC_SEEDS if seeds is None else seeds
            try:
                budgets = [int(v) for v in nfe_text.split(",")]
                seed_list = [int(v) for v in seeds_text.split(",")]
            except ValueError:
                raise ConfigError(f"--nfe {nfe_text!r} and --seeds {seeds_text!r} are comma-separated whole "
                                  f"numbers.") from None
            chosen = b.check_suite({"name": f"{Path(spec).stem}-bench", "specs": [spec],
                                    "targets": target or [build(spec).run.target], "nfe": budgets,
                                    "seeds": seed_list, "samples": SPEC_SAMPLES if samples is None else samples,
                                    "peers": list(PEERS) if peers is not False else [],
                                    "nll_targets": [], "nll_points": 0}, "dfc bench")
        chosen, skipped = b.without_missing_peers(chosen)
        for message in skipped:  # one line per missing library
            err_console.print(message, highlight=False, markup=False, soft_wrap=True)
        cells = b.suite_cells(chosen, sweeps if spec is not None and not suites else None)

        def announce(cached: int, todo: int):  # before the first cell runs
            err_console.print(f"bench {chosen['name']}: {cached + todo:,} cells, {cached:,} cached, {todo:,} to "
                              f"compute", highlight=False)
            busy = b.busy_cores(jobs) if todo and where.address is None else None  # cells run on this machine
            if busy is not None:
                err_console.print(busy, highlight=False, markup=False, soft_wrap=True)

        import signal

        def stop(signum, frame):  # SIGTERM as Ctrl-C: queued cells are dropped, finished ones are cached
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("{task.fields[last]}", style="dim"),
                          console=err_console) as bar:
                task = bar.add_task(f"bench {chosen['name']}", total=len(cells), last="")
                records = b.run_cells(cells, results / "cache", jobs, progress=lambda done, total, last: bar.update(
                    task, completed=done, total=total, last=last), executor=where, announce=announce)
        finally:
            signal.signal(signal.SIGTERM, previous)
        failure = unfinished(cells, records)
        if failure is not None and all(r.get("crashed") for r in records):
            raise failure  # nothing to tabulate
        df = b.frame(records)
        folder = results / chosen["name"]
        b.write_results(df, folder, tuple(own))
        summ = b.summary(df)
        if own:  # where SPEC stands: the suite's own tables are in RESULTS.md and its folder
            rows_of = "its" if len(own) == 1 else "their"
            for t, rows in b.standing(summ, own).groupby("target", sort=False):
                shown = rows.drop(columns=["target", "floor"] + (["row"] if len(own) == 1 else []))
                out_console.print(b.rich_table(shown, f"{t} (floor {b.fmt(rows['floor'].iloc[0])}): {', '.join(own)} "
                                               f"against the {chosen['name'].split('-vs-')[-1]} suite's rows, "
                                               f"{rows_of} rank among them", index=False))
            out_console.print(f"{b.STANDING_NOTE} Every table: {folder / 'tables.md'}", highlight=False)
        for t in ([] if own else summ["target"].unique()):
            out_console.print(b.rich_table(b.wide(summ, t), f"{t}: {b.METRICS[b.METRIC][0]} by NFE, mean over "
                                                            f"{len(chosen['seeds'])} seed(s) (floor first)"))
            if spec is not None and len(sweeps) > 1:
                for cost, what in (("nfe", "NFE"), ("wall_s", "wall time")):
                    front = b.front_table(summ, t, cost)
                    front["label"] = [b.display_label(lab, k) for lab, k in zip(front["label"], front["kind"])]
                    out_console.print(b.rich_table(front[["label", "NFE budget", "wall s", "KDE s", b.METRIC]],
                                                   f"{t}: Pareto front of {b.METRICS[b.METRIC][0]} against {what} "
                                                   f"(the family and the peers)", index=False))
        failed = df[df["error"].notna()]
        if not failed.empty:
            first = failed.iloc[0]
            err_console.print(f"{len(failed)} cell(s) failed, e.g. {first['label']} on {first['target']}: "
                              f"{first['error']}", highlight=False, markup=False)
        if chosen["name"] == "default":
            b.report(folder, results_md)
            out_console.print(f"wrote {results_md}", highlight=False)
        out_console.print(f"results: {folder}", highlight=False)
        if failure is not None:
            raise failure

    _guard(body)


app.add_typer(train_app, name="train")


@app.command()
def fmt(
    spec: str = SPEC_ARG,
    to: str = typer.Option(..., "--to", help="yaml | dfs"),
    out: Optional[Path] = typer.Option(None, help="Write here instead of printing."),
):
    """Convert a spec between the .dfs language and its YAML twin (same meaning)."""

    def body():
        from dfc.format import to_dfs, to_yaml
        from dfc.io import atomic_write_text
        from dfc.spec import find_spec
        from dfc.syntax import read_spec_file

        if to not in ("yaml", "dfs"):
            raise ConfigError(f"--to {to!r}: choose yaml or dfs.")
        syn = read_spec_file(find_spec(spec))
        text = to_yaml(syn) if to == "yaml" else to_dfs(syn)
        if out is None:
            sys.stdout.write(text)
        else:
            atomic_write_text(out, text)

    _guard(body)


@app.command()
def presets():
    """List the preset specs with their descriptions."""

    def body():
        from dfc.spec import preset_dir
        from dfc.syntax import read_spec_file

        table = Table(title="dfc presets", header_style="bold")
        table.add_column("name")
        table.add_column("extends")
        table.add_column("description", overflow="fold")
        for p in sorted(preset_dir().glob("*.dfs")):
            syn = read_spec_file(p)
            table.add_row(syn.name, syn.extends[0] if syn.extends else "", syn.description)
        out_console.print(table)

    _guard(body)


@app.command()
def solvers():
    """List the solvers (dfc.solvers.REGISTRY) with what each declares: backend, NFE per step, order, noise, clocks."""

    def body():
        from dfc.solvers import CLOCKS, REGISTRY, unit

        wide = out_console.width >= 120  # else the descriptions follow the table, one line each
        table = Table(title="dfc solvers (--solver, --backend)", header_style="bold")
        for col in ("name", "backend", "NFE", "order", "noise", "clocks", "history") + (("what",) if wide else ()):
            table.add_column(col, overflow="fold", no_wrap=col != "what")
        specs = {"any": "any", "none": "ODE specs", "required": "SDE specs"}
        units = [unit(backend, name) for backend, name in REGISTRY]
        for u in units:
            clocks = "all" if set(u.clocks) == set(CLOCKS) else ", ".join(u.clocks)
            table.add_row(u.name, u.backend, str(u.nfe_per_step), str(u.order), specs[u.noise], clocks,
                          str(u.history), *((u.summary,) if wide else ()))
        out_console.print(table)
        if not wide:
            for u in units:
                out_console.print(f"[bold]{u.name}[/bold] ({u.backend}): {u.summary}", highlight=False)
        out_console.print(f"clocks: all = {', '.join(CLOCKS)} (MATH §9).", highlight=False)

    _guard(body)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
