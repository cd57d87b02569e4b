"""`dfc fmt`: print a spec's syntax tree as .dfs or as YAML (expressions kept as written)."""

from __future__ import annotations

import yaml

from dfc.syntax import SpecSyntax, run_text


def _head(d) -> str:
    return d.name if d.args is None else f"{d.name}({', '.join(d.args)})"


def _prior_text(prior) -> str:
    if not prior.kwargs:
        return prior.kind
    return f"{prior.kind}(" + ", ".join(f"{k} = {text}" for k, _e, text in prior.kwargs) + ")"


def to_dfs(syn: SpecSyntax) -> str:
    head = f"spec {syn.name}"
    if syn.extends:
        head += f" extends {syn.extends[0]}"
    if syn.description:
        head += f' "{syn.description}"'
    lines = [head]
    lines += [f"  param {p.name} = {p.text}" for p in syn.params]
    lines += [f"  {_head(d)} = {d.text}" for d in syn.definitions]
    if syn.prior is not None:
        lines.append(f"  prior {_prior_text(syn.prior)}")
    if syn.run:
        lines.append("  run " + ",\n      ".join(f"{e.key} = {run_text(e.value)}" for e in syn.run))
    lines.append("end")
    return "\n".join(lines) + "\n"


def _literal(text: str):
    """A number written as a number in YAML; any other expression stays a string."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _run_yaml(value):
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, list):
        return [_run_yaml(v) for v in value]
    return run_text(value)


def to_yaml(syn: SpecSyntax) -> str:
    doc: dict = {"spec": syn.name}
    if syn.extends:
        doc["extends"] = syn.extends[0]
    if syn.description:
        doc["description"] = syn.description
    if syn.params:
        doc["params"] = {p.name: _literal(p.text) for p in syn.params}
    if syn.definitions:
        doc["define"] = {_head(d): d.text for d in syn.definitions}
    if syn.prior is not None:
        doc["prior"] = _prior_text(syn.prior)
    if syn.run:
        doc["run"] = {e.key: _run_yaml(e.value) for e in syn.run}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)
