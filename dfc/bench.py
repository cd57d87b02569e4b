"""`dfc bench`: quality against NFE and wall time, for every spec and for the peers.

A suite (YAML in benchmarks/suites/) names specs, peers, targets, NFE budgets, seeds and the
number of samples. It expands into cells, one sampler run each; each cell's result is cached
as a JSON file as soon as it finishes (atomically, dfc.io), so an interrupted run resumes and
computes only what is missing, and `--jobs N` runs cells in parallel processes. Results become
a long CSV, Markdown tables, a rich table per target, PNG plots of quality against NFE and
against wall time, Pareto fronts, and `benchmarks/RESULTS.md`.

Accounting, the same for every row:

- NFE counts evaluations of the score field (for peers: calls of the denoiser
  D(x; σ) = x + σ² ∇log q_σ(x), the same exact field). A spec with budget B takes
  B / (NFE per step) steps of its own grid and clock.
- k-diffusion's samplers and diffusers' schedulers (as dfc.peers_diffusers sets them) end with a
  step to σ = 0, i.e. they spend their last evaluation on D(x; σ_min). Like for like, a spec whose path ends at a small noise level (σ(t1) ≤
  DENOISE_BELOW: the score-based presets) spends its last evaluation the same way, on Tweedie's
  step to σ = 0 (`denoise = true`), unless the spec or the sweep sets `denoise` itself. Euler on
  `ve_ode` in the σ clock then reproduces k-diffusion's Euler sample for sample (a test).
- Every row of a (target, seed) is compared with the same reference draw; the floor is the
  same metric between further independent target draws of the same size and that reference
  (the mean of FLOOR_DRAWS draws).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from dfc.errors import ConfigError, DfcError, NumericalError

ROOT = Path(__file__).resolve().parent.parent  # the source tree, when dfc runs from one


def _suites_dir() -> Path:
    """The suites shipped as package data (dfc.suites, from benchmarks/suites/ of the source tree)."""
    from importlib import resources

    try:
        return Path(str(resources.files("dfc.suites")))
    except ModuleNotFoundError:  # an editable install made before dfc.suites existed
        return ROOT / "benchmarks" / "suites"


SUITES = _suites_dir()
RESULTS = ROOT / "benchmarks" / "results"  # the source tree's results folder
OUT_DEFAULT = "bench-results"  # outside the source tree: ./bench-results


def in_source_tree(cwd: Path | None = None) -> bool:
    """Whether the current directory is inside dfc's own source tree (benchmarks/ beside the package)."""
    cwd = (cwd or Path.cwd()).resolve()
    tree = (ROOT / "pyproject.toml").exists() and (ROOT / "benchmarks" / "suites").is_dir()
    return tree and (cwd == ROOT or ROOT in cwd.parents)


def results_dir(out: Path | None = None) -> Path:
    """Where `dfc bench` keeps its cache and results: `out`, else benchmarks/results/ inside the source
    tree, else ./bench-results in the current directory."""
    if out is not None:
        return Path(out)
    return RESULTS if in_source_tree() else Path.cwd() / OUT_DEFAULT


def results_md(results: Path) -> Path:
    """RESULTS.md for a results folder: benchmarks/RESULTS.md for the source tree's, else beside the results."""
    return ROOT / "benchmarks" / "RESULTS.md" if results.resolve() == RESULTS.resolve() else results / "RESULTS.md"
HARNESS = 6  # part of every cache key: bump it when what a cell computes changes
METRIC = "sliced_w2"  # the headline quality metric (lower is better)
METRICS = {  # name -> (title, lower is better)
    "sliced_w2": ("sliced W2", True),
    "mmd": ("MMD", True),
    "energy": ("energy distance", True),
    "gauss_kl": ("KL of the fitted Gaussian", True),
    "gauss_w2": ("W2 of the fitted Gaussian", True),
    "modes": ("share of modes captured", False),
    "hq": ("share of high-quality samples", False),
}
FLOOR_DRAWS = 8
BENCH_POINTS = 5_000  # MMD and energy distance above FULL_MAX samples: on this many points of each cloud (quality)
DENOISE_BELOW = 0.02
SUITE_KEYS = {"name", "specs", "variants", "peers", "targets", "nfe", "seeds", "samples", "nll_targets",
              "nll_points"}


# ---------------------------------------------------------------------------------------
# Suites and cells


def load_suite(name_or_path: str) -> dict:
    """A suite by name (benchmarks/suites/NAME.yaml) or path, checked and with defaults filled."""
    p = Path(name_or_path)
    if not p.suffix or not p.exists():
        p = SUITES / f"{name_or_path}.yaml"
    try:
        suite = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        known = ", ".join(sorted(q.stem for q in SUITES.glob("*.yaml")))
        raise ConfigError(f"no benchmark suite {name_or_path!r}.", None, f"Suites: {known}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"suite {p}: YAML error: {exc}.") from None
    if not isinstance(suite, dict) or set(suite) - SUITE_KEYS:
        extra = ", ".join(sorted(set(suite) - SUITE_KEYS)) if isinstance(suite, dict) else "not a mapping"
        raise ConfigError(f"suite {p}: unknown keys ({extra}).", None, f"Keys: {', '.join(sorted(SUITE_KEYS))}.")
    if suite.get("specs") == "all":
        from dfc.spec import preset_dir

        suite["specs"] = sorted(q.stem for q in preset_dir().glob("*.dfs"))
    suite.setdefault("name", p.stem)
    for key, default in (("variants", {}), ("peers", []), ("seeds", [0]), ("samples", 2000), ("nll_targets", []),
                         ("nll_points", 500)):
        suite.setdefault(key, default)
    return check_suite(suite, str(p))


def check_suite(suite: dict, where: str = "suite") -> dict:
    """Fail early, with the suite's name, on a spec, peer, target or number that cannot run."""
    from dfc.peers import PEERS
    from dfc.spec import load_spec
    from dfc.targets import make_target

    for key in ("specs", "targets", "nfe"):
        if not isinstance(suite.get(key), list) or not suite[key]:
            raise ConfigError(f"{where}: `{key}` must be a non-empty list.")
    for key in ("peers", "seeds", "nll_targets"):
        if not isinstance(suite.get(key), list):
            raise ConfigError(f"{where}: `{key}` must be a list.")
    try:
        suite["nfe"] = [int(v) for v in suite["nfe"]]
        suite["seeds"] = [int(v) for v in suite["seeds"]]
        suite["samples"], suite["nll_points"] = int(suite["samples"]), int(suite["nll_points"])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: `nfe`, `seeds`, `samples` and `nll_points` are whole numbers.") from None
    if min(suite["nfe"]) < 1 or suite["samples"] < 2:
        raise ConfigError(f"{where}: NFE budgets are at least 1 and samples at least 2.")
    bad = [p for p in suite["peers"] if p not in PEERS]
    if bad:
        from dfc.spec import did_you_mean

        raise ConfigError(f"{where}: unknown peer {bad[0]!r}.", None,
                          " ".join(filter(None, [did_you_mean(bad[0], PEERS), f"Peers: {', '.join(PEERS)}."])))
    for t in set(suite["targets"]) | set(suite["nll_targets"]):
        make_target(t)  # raises a ConfigError naming the target
    for s in suite["specs"]:
        load_spec(s)  # raises a located error for a bad spec
    suite["variants"] = _check_variants(suite.get("variants") or {}, where)
    return suite


def _check_variants(variants, where: str) -> dict[str, list[tuple]]:
    """`variants: {spec: [{NAME: VALUE, ...}, ...]}`: each spec run again with each mapping of params
    or run entries (as `--set` would), e.g. `ve_ode: [{solver: dpmpp_2m}]`. Returns spec -> the sets
    of its variants, each a sorted tuple of (NAME, VALUE) pairs; every variant is compiled here."""
    bad = ConfigError(f"{where}: `variants` maps a spec to a list of mappings of params or run entries.", None,
                      "Write e.g. `variants: {ve_ode: [{solver: dpmpp_2m}, {solver: expint_3m}]}`.")
    if not isinstance(variants, dict):
        raise bad
    out = {}
    for spec, items in variants.items():
        if not isinstance(items, list) or not all(isinstance(v, dict) and v for v in items):
            raise bad
        sets = [tuple(sorted((str(k), str(v)) for k, v in v.items())) for v in items]
        try:
            check_sweeps(str(spec), sets)
        except DfcError as exc:
            raise type(exc)(f"{where}: variant of {spec}: {exc.message}", exc.span, exc.hint) from None
        out[str(spec)] = sets
    return out


@dataclass(frozen=True)
class Cell:
    kind: str  # "spec", "peer", "floor" or "nll"
    name: str  # spec name or path, peer name, or "" for the floor
    target: str
    nfe: int
    seed: int
    samples: int
    sets: tuple = ()  # (name, value) pairs: params, or run entries (clock, grid, fields, denoise, ...)
    source: str = ""  # what the result depends on beyond dfc's code (cell_source): an edited spec, or another
    # version of a peer's library, is recomputed

    @property
    def key(self) -> str:
        payload = json.dumps({"harness": HARNESS, "dfc": _dfc_version(), **asdict(self)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        if self.kind == "floor":
            return "floor"
        return Path(self.name).stem + "".join(f" {k}={v}" for k, v in self.sets)


def _dfc_version() -> str:
    from dfc import __version__

    return __version__


def spec_source(name: str) -> str:
    """A digest of the text of spec `name` and of every file up its `extends` chain."""
    from dfc.spec import load_spec

    digest = hashlib.sha1()
    for f in load_spec(name).chain:
        digest.update(Path(f).read_bytes())
    return digest.hexdigest()[:12]


def peer_source(name: str) -> str:
    """The library and installed version a peer runs (`k-diffusion 0.1.1.post1`), or "" when it is not
    installed: a peer's row is k-diffusion's or diffusers' code, so another version is another cell."""
    from dfc.peers import PEERS, library_version

    library = PEERS[name].library
    version = library_version(library)
    return f"{library} {version}" if version else ""


def cell_source(kind: str, name: str) -> str:
    """Cell.source of a cell: the digest of a spec's files (spec, nll), a peer's library version, or ""."""
    if kind == "peer":
        return peer_source(name)
    return spec_source(name) if kind in ("spec", "nll") else ""


def suite_cells(suite: dict, sweeps: list[tuple] | None = None) -> list[Cell]:
    """Every cell of a suite; `sweeps` (parse_sweeps) replaces each spec by its family."""
    cells = []
    n = int(suite["samples"])
    set_grid = sweeps or [()]
    runs = [(s, sets) for s in suite["specs"] for sets in set_grid]
    runs += [(s, sets) for s, variants in suite.get("variants", {}).items() for sets in variants]
    source = {s: spec_source(s) for s, _ in runs}
    library = {p: peer_source(p) for p in suite["peers"]}
    for target, seed in itertools.product(suite["targets"], suite["seeds"]):
        cells.append(Cell("floor", "", target, 0, seed, n))
        for nfe in suite["nfe"]:
            cells += [Cell("spec", s, target, nfe, seed, n, sets, source[s]) for s, sets in runs]
            cells += [Cell("peer", p, target, nfe, seed, n, (), library[p]) for p in suite["peers"]]
    scored = [(s, sets) for s in suite["specs"] for sets in set_grid] + list(suite.get("nll_variants", []))
    for target in suite["nll_targets"]:
        cells += [Cell("nll", s, target, 0, 0, int(suite["nll_points"]), sets, source[s]) for s, sets in scored]
    return list(dict.fromkeys(cells))  # a spec's plain run listed again as a variant is one cell


def join_suite(suite: dict, spec: str, sweeps: list[tuple]) -> tuple[dict, list[str]]:
    """`suite` with `spec` (each member of its family `sweeps`) run beside its rows, on its targets, NFE
    budgets, seeds and N, as a variant of the suite (`dfc bench SPEC --all`): the suite's own cells are
    the cached ones. Returns the joined suite, named `<spec>-vs-<suite>`, and the family's row labels.
    A spec file named like one of the suite's specs but another file is refused: its rows would merge."""
    from dfc.spec import load_spec

    stem, mine = Path(spec).stem, Path(load_spec(spec).chain[0]).resolve()
    if stem in suite["peers"]:
        raise ConfigError(f"spec {spec!r} has the name of the suite's peer {stem!r}: their rows would be one row.",
                          None, f"Give your file another name than {stem}.dfs.")
    for other in suite["specs"]:
        if Path(other).stem != stem:
            continue
        if Path(load_spec(other).chain[0]).resolve() != mine:
            raise ConfigError(f"spec {spec!r} has the name of the suite's spec {other!r}, and is another file: their "
                              f"rows would be one row.", None, f"Give your file another name than {stem}.dfs.")
        spec = other  # the suite's own spec, by another path: its cached cells
    check_sweeps(spec, sweeps)
    variants = dict(suite.get("variants") or {})
    variants[spec] = list(dict.fromkeys([*variants.get(spec, []), *sweeps]))  # suite_cells runs each cell once
    labels = [Cell("spec", spec, "", 0, 0, 0, sets).label for sets in sweeps]
    scored = [(spec, sets) for sets in sweeps]  # the family's exact NLL, as the suite's specs have theirs
    return {**suite, "name": f"{stem}-vs-{suite['name']}", "variants": variants, "nll_variants": scored}, labels


def standing(summ: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Where each row of `labels` (a spec and its family, `dfc bench SPEC --all`) stands among the other
    spec and peer rows, per target and NFE budget: its metric (mean ± sd over seeds), its rank among
    them and itself (1: the best), the best of them and the best peer with the calls against both
    beyond noise (noise_level: `better`, `tie` or `worse`)."""
    say = {"spec": "better", "peer": "worse", "tie": "tie", "both diverge": "both diverge"}
    rows = []
    for (target, nfe), s in summ[summ["kind"] != "floor"].groupby(["target", "nfe_budget"]):
        family = (s["kind"] == "spec") & s["label"].isin(labels)
        others, delta = s[~family], noise_level(summ, target)
        values = others[METRIC].replace(np.nan, np.inf)
        for _, me in s[family].sort_values("label").iterrows():
            value = me[METRIC] if math.isfinite(me[METRIC]) else math.inf
            row = {"target": target, "NFE": int(nfe), "floor": floor_of(summ, target), "row": me["label"],
                   METRIC: _pm(me[METRIC], me.get(f"{METRIC}_sd", math.nan)),
                   "rank": f"{1 + int((values < value).sum())} of {len(others) + 1}"}
            for pool, name, call in ((others, "best other row", "vs it"),
                                     (others[others["kind"] == "peer"], "best peer", "vs peer")):
                best = _best(pool)
                if best is not None:
                    row[name] = f"{display_label(best['label'], best['kind'])} {fmt(best[METRIC])}"
                    row[call] = say[_call(value, best[METRIC], delta)]
            rows.append(row)
    return pd.DataFrame(rows)


def parse_sweeps(items: list[str], fixed: dict[str, str] | None = None) -> list[tuple]:
    """`kappa=0,0.5,1` `eta=0,1` -> every combination as ((kappa, 0), (eta, 0)), ...

    A NAME is a param or a run entry; values are separated by commas, or by `;` when they
    contain commas themselves (`grid=uniform;karras(rho = 7)`). `fixed` NAME=VALUE pairs
    (--set) are added to every combination."""
    axes = [[(k, v)] for k, v in (fixed or {}).items()]
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--sweep {item!r} is not NAME=V1,V2,...", None, "Write e.g. --sweep kappa=0,0.5,1.")
        k, vs = item.split("=", 1)
        sep = ";" if ";" in vs else ","
        values = [(k.strip(), v.strip()) for v in vs.split(sep) if v.strip()]
        if not k.strip() or not values:
            raise ConfigError(f"--sweep {item!r} is not NAME=V1,V2,...", None, "Write e.g. --sweep kappa=0,0.5,1.")
        axes.append(values)
    return [tuple(c) for c in itertools.product(*axes)] if axes else [()]


def check_sweeps(spec: str, sweeps: list[tuple]) -> None:
    """Before any cell runs: every NAME of a sweep (or --set) is a param of `spec` or a run entry, and
    every combination compiles (a bad value fails here, once, rather than in every cell)."""
    from dfc.compiler import compile_spec
    from dfc.runconfig import KEYS
    from dfc.spec import did_you_mean, load_spec

    ir = load_spec(spec)
    params = [p.name for p in ir.params]
    for combo in sweeps:
        for k, v in combo:
            if k not in params and k not in KEYS:
                raise ConfigError(f"--sweep/--set {k}={v}: spec {ir.name!r} has no param or run entry {k!r}.", None,
                                  " ".join(filter(None, [did_you_mean(k, params + list(KEYS)),
                                                         f"Params: {', '.join(params) or 'none'}; run entries: "
                                                         f"{', '.join(KEYS)}."])))
    for combo in sweeps:
        try:
            compile_spec(ir, {k: str(v) for k, v in combo if k not in KEYS},
                         {k: str(v) for k, v in combo if k in KEYS})
        except DfcError as exc:
            where = " ".join(f"{k}={v}" for k, v in combo)
            raise type(exc)(f"--sweep/--set {where}: {exc.message}", exc.span, exc.hint) from None


# ---------------------------------------------------------------------------------------
# One cell


def _reference(target, n: int, seed: int):
    """The reference draw every row of (target, seed) is compared with."""
    return target.sample(n, torch.Generator().manual_seed(10_000 + seed))


_REFERENCES: dict[tuple, tuple] = {}  # per worker process: (target, samples, seed) -> (target, ref, scales)
REFERENCES_KEPT = 8  # cells come sorted by cost, (target, seed) groups within one NFE: a few suffice


def _cell_reference(cell: "Cell") -> tuple:
    """The cell's target, reference draw and MMD bandwidths, made once per worker process
    (every cell of a (target, seed, N) shares them; they are pure functions of that key)."""
    from dfc.floors import reference_scales
    from dfc.targets import make_target

    key = (cell.target, cell.samples, cell.seed)
    if key not in _REFERENCES:
        target = make_target(cell.target).to(dtype=torch.float32)
        ref = _reference(target, cell.samples, cell.seed).double()
        if len(_REFERENCES) >= REFERENCES_KEPT:  # bounded memory: the oldest goes
            del _REFERENCES[next(iter(_REFERENCES))]
        _REFERENCES[key] = (target, ref, reference_scales(ref))
    return _REFERENCES[key]


def _diverged(target) -> dict:
    out = {m: math.inf for m in ("sliced_w2", "mmd", "energy")}
    if target.gaussian is not None:
        out.update(gauss_kl=math.inf, gauss_w2=math.inf)
    if _mixture(target):
        out.update(modes=0.0, hq=0.0)
    return {**out, "finite": False}


def _mixture(target) -> bool:
    from dfc.targets import GaussianMixture

    return isinstance(target, GaussianMixture) and target.num_components > 1


def quality(target, x: torch.Tensor, ref: torch.Tensor, scales: list[float] | None = None) -> dict:
    """Every metric that applies to `target`, of samples `x` against the reference draw `ref`.

    sliced W2 on every point (with `sliced_w2_se`, its Monte Carlo error over the directions),
    MMD (multi-scale RBF with bandwidths `scales`, default `reference_scales(ref)`: one kernel
    for every row of a target) and energy distance, as `dfc.floors.measure` computes them:
    exact (O(N²)) up to dfc.floors.FULL_MAX samples; above that the block estimates with their
    standard errors `mmd_se`, `energy_se` on a fixed subsample of BENCH_POINTS points of each
    cloud, so that a cell's metrics cost O(BENCH_POINTS · BLOCK) whatever N (a floor row is
    measured the same way, so rows and floor stay comparable). Then the KL and W2 of the
    fitted Gaussian on a Gaussian target; the shares of modes captured and of high-quality
    samples on a mixture. A sample with a non-finite point has diverged: distances inf, shares 0."""
    from dfc.floors import measure, resolve_level
    from dfc.metrics import fit_gaussian, gaussian_kl, gaussian_w2, mode_metrics

    x = x.detach().double().cpu()
    if not bool(torch.isfinite(x).all()):
        return _diverged(target)
    level = resolve_level("auto", max(x.shape[0], ref.shape[0]))
    m = measure(x, ref, level, points=BENCH_POINTS, scales=scales)
    out = {k: m[k] for k in ("sliced_w2", "sliced_w2_se", "mmd", "energy")}
    if level == "fast":
        out.update(mmd_se=m["mmd_se"], energy_se=m["energy_se"])
    out["finite"] = True
    gauss = target.gaussian
    if gauss is not None:
        m, c = fit_gaussian(x)
        tm, tc = (v.double().cpu().numpy() for v in gauss)
        try:
            out["gauss_kl"] = gaussian_kl(m, c, tm, tc)
        except DfcError:  # a collapsed (singular) sample covariance
            out["gauss_kl"] = math.inf
        out["gauss_w2"] = gaussian_w2(m, c, tm, tc)
    if _mixture(target):
        means, stds, _ = target.components()
        out.update(mode_metrics(x, means, stds))
    return out


def run_cell(cell: Cell) -> dict:
    """Run one cell in this process; returns a flat record (never raises for a sampler failure)."""
    from dfc.executors import malloc_as_default

    torch.set_num_threads(1)  # cells run side by side in processes; timings are per core
    malloc_as_default()  # a Dask worker's MALLOC_TRIM_THRESHOLD_ would make the cell ~2.5× slower (dfc.executors)
    rec = identity(cell)
    target = None
    try:
        target, ref, scales = _cell_reference(cell)
        if cell.kind == "floor":
            rec.update(_run_floor(cell, target, ref, scales))
        elif cell.kind == "peer":
            from dfc.peers import run_peer

            cpu = time.process_time()
            x, cost = run_peer(cell.name, target, cell.samples, cell.nfe, cell.seed)
            rec.update(**cost, cpu_s=time.process_time() - cpu, estimator_s=0.0,
                       **quality(target, x, ref, scales))
        elif cell.kind == "spec":
            rec.update(_run_spec(cell, target, ref, scales))
        else:
            rec.update(_run_nll(cell))
    except NumericalError as exc:  # the sampler blew up: a diverged row, not a failure
        rec.update(_diverged(target) if target is not None else {"error": exc.message}, note=exc.message)
    except DfcError as exc:  # a spec that cannot run on this target: deterministic, cached
        rec.update(error=exc.message)
    except Exception as exc:  # noqa: BLE001 — reported, and not cached: the next run retries it
        rec.update(error=f"{type(exc).__name__}: {exc}", crashed=True)
    return rec


def identity(cell: Cell) -> dict:
    """The columns of a record that say which cell it is."""
    return {"kind": cell.kind, "name": cell.name, "label": cell.label, "target": cell.target,
            "nfe_budget": cell.nfe, "seed": cell.seed, "samples": cell.samples, "sets": dict(cell.sets),
            **({"library": cell.source} if cell.kind == "peer" else {})}


def _run_floor(cell: Cell, target, ref, scales) -> dict:
    draws = [quality(target, target.sample(cell.samples, torch.Generator().manual_seed(20_000 + 100 * cell.seed + i)),
                     ref, scales) for i in range(FLOOR_DRAWS)]
    out = {k: sum(d[k] for d in draws) / len(draws) for k in draws[0] if k != "finite"}
    sw = [d["sliced_w2"] for d in draws]
    out["floor_sd"] = float(torch.tensor(sw).std())  # spread of one draw's distance to the reference
    return {"nfe": 0, "wall_s": 0.0, "estimator_s": 0.0, "finite": True, **out}


def _compile(cell: Cell, run: dict):
    """The cell's spec; a sweep's NAME=VALUE is a run entry (clock, grid, fields, ...) or a param."""
    from dfc.compiler import compile_spec
    from dfc.runconfig import KEYS
    from dfc.spec import load_spec

    params = {k: str(v) for k, v in cell.sets if k not in KEYS}
    run = {k: str(v) for k, v in cell.sets if k in KEYS} | run
    return compile_spec(load_spec(cell.name), params, run)


def bench_settings(cell: Cell) -> dict:
    """The run overrides a spec cell uses: its steps for the NFE budget, and denoise (module doc)."""
    probe = _compile(cell, {"target": cell.target})
    denoise = probe.run.denoise
    if "denoise" not in probe.run.spans and probe.at("sigma", probe.t1) <= DENOISE_BELOW:
        denoise = True  # end like k-diffusion: the last evaluation is the step to σ = 0
    steps = max(1, cell.nfe // probe.run.nfe_per_step - (1 if denoise else 0))
    return {"target": cell.target, "samples": str(cell.samples), "seed": str(cell.seed), "steps": str(steps),
            "denoise": "true" if denoise else "false"}


def _run_spec(cell: Cell, target, ref, scales) -> dict:
    from dfc.sample import simulate

    spec = _compile(cell, bench_settings(cell))
    cpu = time.process_time()
    x, cost = simulate(spec, target)
    cpu = time.process_time() - cpu
    data = x if spec.run.denoise else x * spec.at("u", spec.t1)
    return {"nfe": cost["nfe"], "wall_s": cost["wall_s"], "cpu_s": cpu, "estimator_s": cost["estimator_s"],
            "steps": spec.run.steps,
            "denoise": spec.run.denoise, "clock": spec.run.clock, "grid": spec.run.grid, "solver": spec.run.solver,
            "fields": spec.run.describe().get("fields", ""), **quality(target, data, ref, scales)}


def _run_nll(cell: Cell) -> dict:
    """The exact NLL of the spec's flow-ODE twin (MATH §7), where s_p needs no population estimate."""
    from dfc.explain import tracking
    from dfc.likelihood import needs_sp, ode_loglik, sp_source
    from dfc.sample import make_run_target

    spec = _compile(cell, {"target": cell.target})
    target = make_run_target(spec, dtype=torch.float64)
    if needs_sp(spec) and spec.run.estimator != "closed":
        if not tracking(spec).holds:
            return {"note": "s_p would need a population estimate: no exact NLL"}
        if not _prior_is_q0(spec, target):  # s_p = s_Q is exact only when p_0 = Q_0 (MATH §3)
            return {"note": "p_0 is not Q_0, so s_p = s_Q does not hold: no exact NLL"}
    source = sp_source(spec, target)
    pts = target.sample(cell.samples, torch.Generator().manual_seed(30_000))
    r = ode_loglik(spec, target, pts, rtol=1e-4, atol=1e-4, source=source)
    nll = -r.logp
    return {"nll": float(nll.mean()), "nll_se": float(nll.std() / math.sqrt(len(nll))), "nfe": r.nfe,
            "wall_s": r.wall_s}


def _prior_is_q0(spec, target, rel: float = 0.05) -> bool:
    """Whether p_0 is (about) Q_0 = law of (Y + σ(t0) ε)/u(t0): `prior target`, or a normal prior
    whose mean and per-dimension scale match Q_0's within `rel` of its scale."""
    if spec.ir.prior.kind != "normal":
        return True
    kw = {k: float(v.xreplace(spec.params)) for k, v in spec.ir.prior.kwargs}
    y = target.sample(20_000, torch.Generator().manual_seed(1))
    u0, s0 = spec.at("u", spec.t0), spec.at("sigma", spec.t0)
    mean, sd = y.mean(0) / u0, ((y.var(0) + s0**2) ** 0.5) / u0
    return bool(((mean - kw["mean"]).abs() <= rel * sd).all() and ((sd / kw["scale"] - 1).abs() <= rel).all())


# ---------------------------------------------------------------------------------------
# Many cells, cached


def _plain(rec: dict) -> dict:
    """JSON-safe: a non-finite float is stored as its name ("inf", "nan") and read back by frame()."""
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}


def _cost_hint(c: Cell) -> float:
    """Rough relative cost, to start the long cells first when running in parallel."""
    return {"nll": 1e4, "floor": 50.0}.get(c.kind, c.nfe)


PARENT_POLL_S = 0.5  # how often a worker checks that the process that started it is alive


def die_with_parent(parent: int) -> None:
    """Worker initializer: the worker ends when `parent` does, even if the parent is killed (SIGKILL)
    and cannot shut its pool down. On Linux the kernel sends SIGKILL on the parent's death
    (prctl PR_SET_PDEATHSIG); everywhere, a daemon thread polls the parent and exits the worker."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass  # the thread below still stops the worker

    def alive() -> bool:
        if os.getppid() != parent:  # re-parented: the parent is gone
            return False
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    if not alive():
        os._exit(1)

    def watch():
        while alive():
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="dfc-parent-watch", daemon=True).start()


def cores_in_use(seconds: float = 0.3) -> float | None:
    """How many cores this machine is using now: the share of non-idle CPU time over `seconds` (Linux
    /proc/stat) times the core count; None where that cannot be read. Unlike the load average it
    does not lag a job that has just ended."""
    def sample():
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
        return sum(fields[:8]), fields[3] + (fields[4] if len(fields) > 4 else 0)  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    span = total1 - total0
    return (1.0 - (idle1 - idle0) / span) * (os.cpu_count() or 1) if span > 0 else None


def busy_cores(jobs: int, busy: float | None = None, cores: int | None = None) -> str | None:
    """A warning when this machine is already busy: other work of about a core or more (`busy` cores
    in use, default `cores_in_use()`, else the 1-minute load average) that, with the `jobs` cells,
    exceeds its `cores` (default os.cpu_count; half a core of slack for start-up and the client).
    Cells then share cores with other work and their wall times (the tables' wall columns) are
    inflated (1.74× measured for a cell beside one busy process on 2 cores); None when there is
    room or nothing can be read."""
    if busy is None:
        busy = cores_in_use()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
    cores = cores or os.cpu_count() or 1
    if busy < 0.9 or busy + jobs <= cores + 0.5:
        return None
    return (f"This machine is busy: other work is using about {busy:.1f} of its {cores} cores, and --jobs {jobs} "
            f"adds {jobs}. The cells will share cores with it, so their wall times (the tables' wall columns) "
            f"will be inflated; quality does not depend on it. For timings, run when the machine is idle or "
            f"lower --jobs.")


def cached_records(cells: list[Cell], cache: Path) -> tuple[dict[str, dict], list[Cell]]:
    """The records of `cells` already in `cache` (by key) and the cells still to compute (each
    once; an unreadable cache file counts as missing)."""
    done, todo = {}, []
    for c in dict.fromkeys(cells):  # a cell listed twice runs once
        f = cache / f"{c.key}.json"
        if f.exists():
            try:
                done[c.key] = json.loads(f.read_text())
                continue
            except (json.JSONDecodeError, OSError):
                pass  # an unreadable cache file is recomputed
        todo.append(c)
    return done, todo


def run_cells(cells: list[Cell], cache: Path, jobs: int = 1, progress=None, executor="local",
              announce=None) -> list[dict]:
    """Results of all cells: cached ones read back, missing ones computed and cached one by one.

    `executor` (dfc.executors: local, dask, dask://HOST:PORT) runs the missing cells, the long ones
    first; each record is written to the cache atomically as it arrives, so an interrupt loses only
    the cells still running. `progress(done, total, last_label)` is called as cells finish. A cell
    that crashed (an unexpected exception, not a DfcError; or on Dask a lost cell) is reported in
    its record but not cached. `announce(cached, to_compute)` is called once the cache has been read,
    before any cell runs."""
    from contextlib import closing

    from dfc.executors import runner
    from dfc.io import atomic_write_json

    cache.mkdir(parents=True, exist_ok=True)
    done, todo = cached_records(cells, cache)
    if announce:
        announce(len(done), len(todo))
    total = len(done) + len(todo)
    if progress:
        progress(len(done), total, "")
    todo.sort(key=_cost_hint, reverse=True)
    if todo:  # the results are closed (unwanted cells cancelled) before the executor is released
        with runner(executor, jobs) as run, closing(run(todo)) as finished:
            for c, rec in finished:
                rec = _plain(rec)
                if not rec.get("crashed"):
                    atomic_write_json(cache / f"{c.key}.json", rec)
                done[c.key] = rec
                if progress:
                    progress(len(done), total, f"{c.label} · {c.target} · NFE {c.nfe}")
    return [done[c.key] for c in cells]


def without_missing_peers(suite: dict) -> tuple[dict, list[str]]:
    """`suite` without the peers whose library is not installed, and one message per such
    library (dfc.peers.skip_message): their rows are skipped, not failed."""
    from dfc.peers import missing_libraries, skip_message

    missing = missing_libraries(suite["peers"])
    dropped = {name for names in missing.values() for name in names}
    return {**suite, "peers": [p for p in suite["peers"] if p not in dropped]}, [skip_message(lib) for lib in missing]


def peers_available(names=None) -> bool:
    """Whether every peer among `names` (default: all of them) has its library installed."""
    from dfc.peers import PEERS, missing_libraries

    return not missing_libraries(PEERS if names is None else names)


def display_label(label: str, kind: str) -> str:
    """A row's label in plots and fronts: a peer's names its library (`dpmpp_2m (k-diffusion)`)."""
    if kind != "peer":
        return label
    from dfc.peers import PEERS

    return f"{label} ({PEERS[label].library if label in PEERS else 'peer'})"


# ---------------------------------------------------------------------------------------
# Summaries, tables, plots, Pareto fronts


def frame(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(records)
    for col in (*METRICS, "wall_s", "cpu_s", "nfe", "estimator_s", "nll", "nll_se", "floor_sd"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if "error" not in df:
        df["error"] = None
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (target, row, NFE budget): every metric, actual NFE, wall time,
    samples/s, KDE time, the spread of the headline metric over seeds, failures."""
    runs = df[df["kind"].isin(["spec", "peer", "floor"])].copy()
    runs["failed"] = runs["error"].notna()
    metrics = [m for m in METRICS if m in runs]
    agg = {m: (m, "mean") for m in metrics}
    agg.update({f"{METRIC}_sd": (METRIC, "std"), "nfe": ("nfe", "mean"), "wall_s": ("wall_s", "mean"),
                **({"cpu_s": ("cpu_s", "mean")} if "cpu_s" in runs else {}),
                "estimator_s": ("estimator_s", "mean"), "samples": ("samples", "first"), "seeds": ("seed", "nunique"),
                "failed": ("failed", "sum")})
    if "floor_sd" in runs:
        agg["floor_sd"] = ("floor_sd", "mean")
    if "fields" in runs:
        agg["fields"] = ("fields", "first")
    out = runs.groupby(["target", "kind", "label", "nfe_budget"], dropna=False).agg(**agg).reset_index()
    out["samples_per_s"] = out["samples"] / out["wall_s"].where(out["wall_s"] > 0)
    out["kde_share"] = out["estimator_s"] / out["wall_s"].where(out["wall_s"] > 0)
    nll = df[df["kind"] == "nll"]
    if not nll.empty and "nll" in nll:
        out = out.merge(nll[["target", "label", "nll"]].drop_duplicates(["target", "label"]),
                        on=["target", "label"], how="left")
    return out


def floor_of(summ: pd.DataFrame, target: str, metric: str = METRIC) -> float:
    f = summ[(summ["target"] == target) & (summ["kind"] == "floor")]
    return float(f[metric].mean()) if metric in f and not f.empty else math.nan


def pareto(points: list[tuple[float, float, str]], lower_is_better: bool = True) -> list[tuple[float, float, str]]:
    """The points no other point beats on both cost (first) and error (second), by cost.

    Points with a non-finite cost or error are left out; with `lower_is_better=False` the
    second coordinate is a score (higher is better)."""
    sign = 1.0 if lower_is_better else -1.0
    ok = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
    front, best = [], math.inf
    for cost, err, label in sorted(ok, key=lambda p: (p[0], sign * p[1])):
        if sign * err < best:
            front.append((cost, err, label))
            best = sign * err
    return front


def fmt(v) -> str:
    """A table cell: 3 decimals, or 3 significant digits when large; 'div.' for a diverged run."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, str, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(v)
    v = float(v)
    if math.isinf(v):
        return "div."
    if v != 0 and (abs(v) >= 1000 or abs(v) < 0.001):
        return f"{v:.2e}"
    return f"{v:.3f}"


def wide(summ: pd.DataFrame, target: str, metric: str = METRIC) -> pd.DataFrame:
    """One row per sampler (floor first), one column per NFE budget, plus the wall time and
    KDE time at the largest NFE, and the NLL where measured. Sorted by the second NFE column."""
    s = summ[summ["target"] == target]
    rows = s[s["kind"] != "floor"]
    if rows.empty or metric not in rows:
        return pd.DataFrame()
    table = rows.pivot_table(index="label", columns="nfe_budget", values=metric, aggfunc="first", dropna=False)
    table.columns = [f"NFE {c}" for c in table.columns]
    sd_col = f"{metric}_sd"
    spread = rows.pivot_table(index="label", columns="nfe_budget", values=sd_col, aggfunc="first", dropna=False) \
        if sd_col in rows and rows[sd_col].notna().any() else None
    last = rows.sort_values("nfe_budget").groupby("label").last()
    kind = rows.groupby("label")["kind"].first()
    table["wall s (max NFE)"] = last["wall_s"]
    table["KDE s (max NFE)"] = last["estimator_s"]
    if "nll" in s and s["nll"].notna().any():
        table["NLL"] = rows.groupby("label")["nll"].first()
    lower = METRICS[metric][1]
    key_col = table.columns[min(1, len([c for c in table.columns if c.startswith("NFE")]) - 1)]
    table = table.sort_values(key_col, ascending=lower, na_position="last")
    floor = floor_of(summ, target, metric)
    floor_cell = floor
    if spread is not None:  # "mean ± sd over seeds" (sorting is done on the means above)
        for j, c in enumerate(spread.columns):
            col = table.columns[j]
            sd = spread[c].reindex(table.index)
            table[col] = [_pm(m, v) for m, v in zip(table[col], sd)]
        f = s[s["kind"] == "floor"]
        if metric == METRIC and "floor_sd" in f and f["floor_sd"].notna().any():
            floor_cell = _pm(floor, float(f["floor_sd"].mean()))
    table.insert(0, "kind", kind.reindex(table.index))
    floor_row = pd.DataFrame({c: [floor_cell if c.startswith("NFE") else ("floor" if c == "kind" else math.nan)]
                              for c in table.columns}, index=["floor"])
    return pd.concat([floor_row, table])


def _pm(mean, sd) -> str | float:
    """`mean ± sd` as a table cell (the mean alone where there is no spread)."""
    if sd is None or not math.isfinite(float(sd)) or not math.isfinite(float(mean)):
        return mean
    return f"{fmt(mean)} ± {fmt(sd)}"


def _strings(table: pd.DataFrame) -> pd.DataFrame:
    return table.apply(lambda col: col.map(fmt)) if not table.empty else table


def markdown(table: pd.DataFrame, index: bool = True, index_name: str = "sampler") -> str:
    t = _strings(table)
    if index:
        t = t.rename_axis(index_name).reset_index()
    return t.to_markdown(index=False, disable_numparse=True)


SHORT = {"NFE budget": "budget", "samples/s": "samp/s", "wall s (max NFE)": "wall s@max",
         "KDE s (max NFE)": "KDE s@max", "sliced_w2": "SW2"}  # rich column headers


def rich_table(table: pd.DataFrame, title: str, index: bool = True):
    """A rich Table of a wide table (index: the sampler) or of a front/cost table (index=False)."""
    from rich.table import Table

    t = Table(title=title, header_style="bold")
    strings = _strings(table)
    if index:
        t.add_column("sampler", overflow="fold")
    for c in table.columns:  # numbers are never cut; a long label folds
        head = SHORT.get(str(c), str(c))
        width = max([len(head.split()[-1])] + [len(v) for v in strings[c]])
        if c == "label":
            t.add_column(head, overflow="fold")
        else:
            t.add_column(head, justify="left" if c == "kind" else "right", no_wrap=True, min_width=width)
    for label, row in strings.iterrows():
        style = "dim" if label == "floor" or row.get("kind") == "floor" else None
        t.add_row(*([str(label)] if index else []), *row.values, style=style)
    return t


def front_table(summ: pd.DataFrame, target: str, cost: str, kinds=("spec", "peer"),
                metric: str = METRIC) -> pd.DataFrame:
    """The Pareto front of `metric` against `cost` ("nfe" or "wall_s") over the rows of `kinds`."""
    s = summ[(summ["target"] == target) & summ["kind"].isin(kinds)].reset_index(drop=True)
    pts = [(r[cost], r[metric], str(i)) for i, r in s.iterrows()]
    idx = [int(lab) for _, _, lab in pareto(pts, METRICS[metric][1])]
    return _cost_columns(s.loc[idx], metric)


COST_COLUMNS = {"kind": "kind", "label": "label", "nfe_budget": "NFE budget", "nfe": "nfe", "wall_s": "wall s",
                "cpu_s": "CPU s", "samples_per_s": "samples/s", "estimator_s": "KDE s"}


def _cost_columns(s: pd.DataFrame, metric: str) -> pd.DataFrame:
    cols = [c for c in COST_COLUMNS if c in s] + [metric]
    out = s[cols].copy()
    for c in ("nfe_budget", "nfe"):  # whole numbers (the NFE is the same for every seed)
        out[c] = out[c].round().astype("Int64").astype(str)
    return out.rename(columns=COST_COLUMNS)


def cost_table(summ: pd.DataFrame, target: str, metric: str = METRIC) -> pd.DataFrame:
    """Every (sampler, NFE) row of a target with its cost columns, ordered by wall time."""
    s = summ[(summ["target"] == target) & (summ["kind"] != "floor")].sort_values("wall_s")
    return _cost_columns(s, metric)


HIGHLIGHT = 6  # rows drawn in colour per plot (the best at 4-16 NFE); the rest in grey


def _row_lines(rows: pd.DataFrame, metric: str) -> list[tuple[str, pd.DataFrame]]:
    """One line per sampler, rows whose metric coincides at every budget merged into one line whose
    label names them all (`ve_ode = euler (k-diffusion)`), best first (mean over budgets ≤ 16).
    A peer's label names its library."""
    groups: dict[tuple, list] = {}
    for label, g in rows.groupby("label"):
        g = g.sort_values("nfe_budget")
        name = display_label(label, g["kind"].iloc[0])
        key = tuple(f"{float(v):.4g}" for v in g[metric]) + tuple(int(v) for v in g["nfe_budget"])  # equal to 4 digits
        groups.setdefault(key, []).append((name, g))
    lines = [(" = ".join(n for n, _ in members), members[0][1]) for members in groups.values()]

    def score(item):
        g = item[1]
        early = g[g["nfe_budget"] <= 16][metric].replace([np.inf, -np.inf], np.nan)
        value = early.mean() if early.notna().any() else math.inf
        return value if METRICS[metric][1] else -value

    return sorted(lines, key=score)


def plots(summ: pd.DataFrame, folder: Path, metric: str = METRIC, own: tuple = ()) -> list[Path]:
    """`<target>_nfe.png` and `<target>_wall.png`: the metric against the NFE budget (plain ticks at
    the budgets) and against wall time. The best HIGHLIGHT rows, and the rows labelled in `own`, in
    colour with their spread over seeds as error bars, the rest in grey; rows that coincide at every
    budget drawn once and named together; peers dashed; the floor as a line with a band of ± its spread."""
    import matplotlib
    from matplotlib.figure import Figure

    from dfc.io import atomic_save_figure

    out = []
    palette = matplotlib.colormaps["tab10"]
    sd_col = f"{metric}_sd"
    for target, s in summ.groupby("target"):
        rows = s[s["kind"] != "floor"]
        if rows.empty or metric not in rows:
            continue
        floor = floor_of(summ, target, metric)
        f = s[s["kind"] == "floor"]
        floor_sd = float(f["floor_sd"].mean()) if metric == METRIC and "floor_sd" in f and not f.empty else 0.0
        finite = rows[metric].replace([np.inf, -np.inf], np.nan).dropna()
        lines = _row_lines(rows, metric)
        budgets = sorted(int(b) for b in rows["nfe_budget"].unique())
        for x, xlabel, name in (("nfe_budget", "NFE budget (score / denoiser evaluations)", "nfe"),
                                ("wall_s", "wall seconds per run (one core)", "wall")):
            fig = Figure(figsize=(11, 6), layout="constrained")
            ax = fig.add_subplot()
            if math.isfinite(floor):
                if floor_sd > 0:
                    ax.axhspan(floor - floor_sd, floor + floor_sd, color="0.88", zorder=0)
                ax.axhline(floor, color="black", ls=":", lw=1.2, label="floor (± its spread)", zorder=1)
            grey = coloured = 0
            for i, (label, g) in enumerate(lines):
                g = g.sort_values(x)
                ys = g[metric].replace([np.inf, -np.inf], np.nan)
                dashed = (g["kind"] == "peer").all() and "=" not in label
                if i < HIGHLIGHT or set(label.split(" = ")) & set(own):
                    err = g[sd_col] if sd_col in g else None
                    ax.errorbar(g[x], ys, yerr=err, color=palette(coloured % 10), ls="--" if dashed else "-",
                                marker="o", ms=4, lw=2, capsize=3, label=label, zorder=3)
                    coloured += 1
                else:
                    ax.plot(g[x], ys, color="0.6", ls="--" if dashed else "-", lw=0.8, alpha=0.7,
                            label="other rows" if not grey else None, zorder=2)
                    grey += 1
            ax.set_xscale("log")
            ax.set_yscale("log")
            if x == "nfe_budget":
                ax.set_xticks(budgets, [str(b) for b in budgets])
                ax.minorticks_off()
            if math.isfinite(floor) and floor > 0:  # diverged rows (coarse steps) would squash the rest
                lo = min(0.5 * floor, 0.9 * finite.min()) if not finite.empty else 0.5 * floor
                ax.set_ylim(lo, 10 * floor) if METRICS[metric][1] else ax.set_ylim(lo, 1.05)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{METRICS[metric][0]} ({'lower' if METRICS[metric][1] else 'higher'} is better)")
            ax.set_title(f"{target}: {METRICS[metric][0]} against {xlabel.split(' (')[0]}, mean ± sd over seeds; "
                         f"the best {HIGHLIGHT} rows at 4-16 NFE{' and ' + ', '.join(own) if own else ''} in colour")
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
            path = folder / f"{target}_{name}.png"
            atomic_save_figure(path, fig)
            out.append(path)
    return out


def targets_metrics(summ: pd.DataFrame, target: str) -> list[str]:
    s = summ[summ["target"] == target]
    return [m for m in METRICS if m in s and s[m].notna().any()]


def tables_markdown(summ: pd.DataFrame) -> str:
    """Every target: the headline table, the other metrics, the fronts and the cost table."""
    md = []
    for target in summ["target"].unique():
        md.append(f"## {target}\n")
        for m in targets_metrics(summ, target):
            title, lower = METRICS[m]
            md.append(f"### {target}: {title} ({'lower' if lower else 'higher'} is better), mean over seeds\n")
            md.append(markdown(wide(summ, target, m)) + "\n")
        for cost, what in (("nfe", "NFE"), ("wall_s", "wall time")):
            md.append(f"### {target}: Pareto front of {METRICS[METRIC][0]} against {what}\n")
            md.append(markdown(front_table(summ, target, cost), index=False) + "\n")
        md.append(f"### {target}: every row, ordered by wall time\n")
        md.append(markdown(cost_table(summ, target), index=False) + "\n")
    return "\n".join(md)


def write_results(df: pd.DataFrame, folder: Path, own: tuple = ()) -> dict[str, Path]:
    """results.csv (one line per cell), summary.csv (mean over seeds), tables.md, plots (`own` rows in
    colour), and for `dfc bench SPEC --all` (`own`: the spec's rows) standing.md."""
    from dfc.io import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    summ = summary(df)
    paths = {"csv": folder / "results.csv", "summary": folder / "summary.csv", "markdown": folder / "tables.md"}
    atomic_write_text(paths["csv"], df.to_csv(index=False))
    atomic_write_text(paths["summary"], summ.to_csv(index=False))
    atomic_write_text(paths["markdown"], tables_markdown(summ))
    if own:
        paths["standing"] = folder / "standing.md"
        atomic_write_text(paths["standing"], f"# {', '.join(own)} against the suite's rows\n\n"
                                             f"{STANDING_NOTE}\n\n{markdown(standing(summ, list(own)), index=False)}\n")
    for p in plots(summ, folder, own=own):
        paths[p.stem] = p
    return paths


STANDING_NOTE = (f"Per target and NFE budget: the row's {METRICS[METRIC][0]} (mean ± sd over seeds), its rank among "
                 f"every spec and peer row of the suite (1: the best), the best of those and the best peer, and the "
                 f"calls against both beyond noise (`better`, `tie`, `worse`; δ = 2 · the floor's spread / "
                 f"sqrt(seeds), as in RESULTS.md).")


# ---------------------------------------------------------------------------------------
# The answer: best rows per NFE and per wall time, the GAN part against DPM++ 2M and Heun


def _best(s: pd.DataFrame, metric: str = METRIC):
    s = s[s[metric].notna()]
    if s.empty:
        return None
    return s.sort_values([metric, "wall_s"], ascending=[METRICS[metric][1], True]).iloc[0]


def noise_level(summ: pd.DataFrame, target: str) -> float:
    """δ = 2 · (spread of one draw's sliced W2 to the reference) / sqrt(seeds): differences of
    seed-mean sliced W2 smaller than δ are within noise ("tie"), and a row within δ of the
    floor has reached it."""
    f = summ[(summ["target"] == target) & (summ["kind"] == "floor")]
    if f.empty or "floor_sd" not in f:
        return 0.0
    seeds = max(1, int(summ[(summ["target"] == target) & (summ["kind"] != "floor")]["seeds"].max()))
    return float(2 * f["floor_sd"].mean() / math.sqrt(seeds))


def _call(spec_value: float, peer_value: float, delta: float) -> str:
    if not (math.isfinite(spec_value) or math.isfinite(peer_value)):
        return "both diverge"
    if spec_value < peer_value - delta:
        return "spec"
    if peer_value < spec_value - delta:
        return "peer"
    return "tie"


def verdict(summ: pd.DataFrame, budgets=(4, 8, 16, 32, 64)) -> pd.DataFrame:
    """Per target and NFE budget: the best spec and the best peer, their metric and wall times,
    and who wins beyond noise (noise_level)."""
    rows = []
    for (target, nfe), s in summ[summ["kind"] != "floor"].groupby(["target", "nfe_budget"]):
        if nfe not in budgets:
            continue
        spec, peer = _best(s[s["kind"] == "spec"]), _best(s[s["kind"] == "peer"])
        if spec is None:
            continue
        row = {"target": target, "NFE": int(nfe), "floor": floor_of(summ, target), "best spec": spec["label"],
               "spec " + METRIC: spec[METRIC], "spec wall s": spec["wall_s"]}
        if peer is not None:
            row.update({"best peer": display_label(peer["label"], "peer"), "peer " + METRIC: peer[METRIC], "peer wall s": peer["wall_s"],
                        "better": _call(spec[METRIC], peer[METRIC], noise_level(summ, target))})
        rows.append(row)
    return pd.DataFrame(rows)


WALL_BUDGETS = (0.005, 0.01, 0.03, 0.1, 0.3, 1.0)


def by_wall(summ: pd.DataFrame, budgets=WALL_BUDGETS) -> pd.DataFrame:
    """Per target and wall-time budget (seconds per run, one core): the best spec row and peer
    row within it (any NFE)."""
    rows = []
    for target, s in summ[summ["kind"] != "floor"].groupby("target"):
        for w in budgets:
            within = s[s["wall_s"] <= w]
            spec, peer = _best(within[within["kind"] == "spec"]), _best(within[within["kind"] == "peer"])
            if spec is None and peer is None:
                continue
            row = {"target": target, "wall ≤ s": w, "floor": floor_of(summ, target)}
            if spec is not None:
                row.update({"best spec": f"{spec['label']} @ {int(spec['nfe_budget'])}",
                            "spec " + METRIC: spec[METRIC]})
            if peer is not None:
                row.update({"best peer": f"{display_label(peer['label'], 'peer')} @ {int(peer['nfe_budget'])}",
                            "peer " + METRIC: peer[METRIC]})
            if spec is not None and peer is not None:
                row["better"] = _call(spec[METRIC], peer[METRIC], noise_level(summ, target))
            rows.append(row)
    return pd.DataFrame(rows)


def to_floor(summ: pd.DataFrame) -> pd.DataFrame:
    """Per target: the fewest NFE, and the least wall time, at which a spec and a peer reach the
    floor (sliced W2 within noise_level of it)."""
    rows = []
    for target, s in summ[summ["kind"] != "floor"].groupby("target"):
        floor, delta = floor_of(summ, target), noise_level(summ, target)
        ok = s[s[METRIC] <= floor + delta]
        row = {"target": target, "floor": floor, "within": delta}
        for kind in ("spec", "peer"):
            k = ok[ok["kind"] == kind]
            if k.empty:
                row[f"{kind}: fewest NFE"] = row[f"{kind}: least wall s"] = "never"
                continue
            a = k.sort_values(["nfe_budget", "wall_s"]).iloc[0]
            b_ = k.sort_values("wall_s").iloc[0]
            row[f"{kind}: fewest NFE"] = f"{display_label(a['label'], kind)} @ {int(a['nfe_budget'])}"
            row[f"{kind}: least wall s"] = (f"{display_label(b_['label'], kind)} @ {int(b_['nfe_budget'])}: "
                                            f"{b_['wall_s']:.3g} s")
        rows.append(row)
    return pd.DataFrame(rows)


GAN_PEERS = ("dpmpp_2m", "heun")


def gan_vs_peers(summ: pd.DataFrame, budgets=(4, 8, 16)) -> pd.DataFrame:
    """The best spec whose GAN part uses a KDE of the particles, and the best one using a
    Gaussian fit, against DPM++ 2M and Heun at each NFE budget, with the wall-time price."""
    rows = []
    gan = summ[(summ["kind"] == "spec") & (summ["estimator_s"] > 0)]
    fields = gan["fields"].fillna("") if "fields" in gan else pd.Series("kde", index=gan.index)
    for (target, nfe), s in summ[summ["kind"] != "floor"].groupby(["target", "nfe_budget"]):
        if nfe not in budgets:
            continue
        delta = noise_level(summ, target)
        for est in ("kde", "gauss"):
            pick = gan[(gan["target"] == target) & (gan["nfe_budget"] == nfe) & fields.str.contains(est)]
            best = _best(pick)
            if best is None:
                continue
            row = {"target": target, "NFE": int(nfe), "floor": floor_of(summ, target), "s_p": est,
                   "best GAN-part spec": best["label"], METRIC: best[METRIC], "wall s": best["wall_s"],
                   "estimator share": best["kde_share"]}
            for p in GAN_PEERS:
                peer = s[(s["kind"] == "peer") & (s["label"] == p)]
                if not peer.empty:
                    row[p] = peer[METRIC].iloc[0]
                    row[f"vs {p}"] = _call(best[METRIC], float(peer[METRIC].iloc[0]), delta)
                    row[f"× {p} wall"] = best["wall_s"] / max(float(peer["wall_s"].iloc[0]), 1e-9)
            rows.append(row)
    return pd.DataFrame(rows)


SCALE_REPORTS = (("particles.md", "Quality against the particle count (benchmarks/particles.py)"),
                 ("own_law.md", "The GAN-part presets' own laws (benchmarks/own_law.py)"),
                 ("scaling.md", "Cost against the particle count (benchmarks/scaling.py)"),
                 ("estimators.md", "Population estimates of s_p (benchmarks/estimators.py)"),
                 ("threads.md", "Threads (benchmarks/threads.py)"),
                 ("ddp.md", "Data-parallel training under torchrun (benchmarks/ddp.py)"),
                 ("bench-all.md", "What dfc bench --all costs (measured from an empty cache)"))
OTHER_REPORTS = (("likelihood.md", "Likelihood (dfc nll)"), ("learned.md", "Learned fields (dfc train)"),
                 ("overhead.md", "Native sampler overhead"),
                 ("cluster.md", "Executors: local processes and Dask (benchmarks/cluster.py)"),
                 ("cluster-default.md", "Executors on the default suite (benchmarks/cluster.py --suite default)"))


def _extras(folder: Path, reports) -> list[str]:
    """The other benchmarks' Markdown reports found in `folder`, each under its own title (a report's
    own first-level heading is dropped for it)."""
    parts = []
    for name, title in reports:
        extra = folder / name
        if extra.exists():
            text = extra.read_text()
            if text.startswith("# "):
                text = text.split("\n", 1)[1] if "\n" in text else ""
            parts += [f"# {title}", "", text.strip(), ""]
    return parts


def _peer_libraries(runs: pd.DataFrame) -> str:
    """" Peers ran on k-diffusion 0.1.1.post1 and diffusers 0.42.1." from the peer rows' `library`."""
    if "library" not in runs:
        return ""
    found = sorted(str(v) for v in runs.loc[runs["kind"] == "peer", "library"].dropna().unique() if v)
    return f" Peers ran on {' and '.join(found)}." if found else ""


def report(folder: Path, out: Path, notes: Path | None = None) -> Path:
    """benchmarks/RESULTS.md from the latest results in `folder`: the answer (tables generated
    from the numbers, then the hand-written reading in `notes` if present), every table, and
    the likelihood, learned-field and overhead reports if present."""
    from dfc.io import atomic_write_text

    csv = folder / "results.csv"
    if not csv.exists():
        raise ConfigError(f"no results at {csv}.", None, "Run `dfc bench --all` (or --quick) first.")
    df = frame(pd.read_csv(csv).to_dict("records"))
    summ = summary(df)
    rel = csv.relative_to(ROOT) if csv.is_relative_to(ROOT) else csv
    runs = df[df["kind"].isin(["spec", "peer"])]
    parts = ["# dfc benchmark results", "",
             f"Generated by `dfc bench --report` from `{rel}` ({len(runs)} sampler runs; "
             f"{runs['seed'].nunique()} seeds, {int(runs['samples'].max())} samples each). Reproduce with "
             f"`dfc bench --all --jobs 2` (it writes this file too). Quality is {METRICS[METRIC][0]} to a reference "
             f"target draw of the same size (lower is better), the mean over seeds; the **floor** is the same metric "
             f"between independent target draws and that reference (mean of {FLOOR_DRAWS} draws per seed). NFE counts "
             f"score-field (denoiser) evaluations; a score-based spec, like the peers, spends its last one on the "
             f"step to σ = 0. Wall times are seconds on one CPU core ({int(runs['samples'].max()):,} particles). "
             f"Table cells are the mean ± the standard deviation over seeds.{_peer_libraries(runs)}", ""]
    notes = notes if notes is not None else folder / "notes.md"
    if notes.exists():
        parts += ["## The answer", "", notes.read_text().strip(), ""]
    v = verdict(summ)
    if not v.empty:
        parts += ["## Best spec and best peer at each NFE", ""]
        if "best peer" not in v:
            parts.append("Peers were not installed for this run: no peer comparison.")
        else:
            calls = v["better"].value_counts()
            parts.append(f"Of {len(v)} (target, NFE) cases, the best DiffFlow spec is better than the best "
                         f"peer (k-diffusion or diffusers) beyond noise in {calls.get('spec', 0)}, the peer in "
                         f"{calls.get('peer', 0)}, and {calls.get('tie', 0)} are ties. `better` compares the seed "
                         f"means with the noise level δ = 2 · (spread of one target draw's {METRICS[METRIC][0]} to "
                         f"the reference) / sqrt(seeds); a difference under δ is a tie.")
        parts += ["", markdown(v, index=False), ""]
        f = to_floor(summ)
        if not f.empty:
            parts += ["## Cheapest rows at the floor", "",
                      f"The fewest NFE and the least wall time at which a spec, and a peer, reach the floor "
                      f"({METRICS[METRIC][0]} ≤ floor + δ, δ in the `within` column).", "",
                      markdown(f, index=False), ""]
        w = by_wall(summ)
        if not w.empty:
            parts += ["## Best spec and best peer within a wall-time budget", "",
                      "The best row (any NFE) whose wall time per run (one core) is within the budget.", "",
                      markdown(w, index=False), ""]
        g = gan_vs_peers(summ)
        if not g.empty:
            parts += ["## The GAN part against DPM++ 2M and Heun at 4–16 NFE", "",
                      "The best spec whose drift has a GAN part with s_p from a KDE of the particles (exact, binned "
                      "or on a subset by N and dimension: MATH §10), and the best with s_p from a Gaussian fit (O(N)), against the two peers at the "
                      "same NFE: who is better beyond noise, the wall-time price as a multiple of the peer's, and the "
                      "share of the spec's time spent estimating s_p.", "", markdown(g, index=False), ""]
        failed = summ[summ["failed"] > 0]
        if not failed.empty:
            parts += [f"{len(failed)} (row, NFE) cells failed to run; their errors are in `results.csv`.", ""]
    where = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
    parts += _extras(folder.parent, SCALE_REPORTS)
    parts += ["# Tables", "", f"Plots: `{where}/<target>_nfe.png` and `<target>_wall.png`.", "",
              tables_markdown(summ)]
    parts += _extras(folder.parent, OTHER_REPORTS)
    atomic_write_text(out, "\n".join(parts) + "\n")
    return out
