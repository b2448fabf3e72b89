"""The chart's README documents every value of values.yaml, and nothing else:
its table has one row per leaf key (dotted path), with the default that
values.yaml holds. Needs no control plane."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dask-rs"

# Maps documented as one row, because their keys are Kubernetes' own
# (a container's resources), not the chart's.
FREE_FORM = {"operator.resources", "gateway.resources"}

ROW = re.compile(r"^\| `([^`]+)` \| (.*?) \| (.+) \|$")


def values():
    return yaml.safe_load((CHART / "values.yaml").read_text())


def leaves(tree, prefix=""):
    """Dotted keys of values.yaml: lists, scalars, empty maps and the
    FREE_FORM maps are leaves; other maps are walked into."""
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and path not in FREE_FORM:
            yield from leaves(value, path)
        else:
            yield path, value


def readme_rows():
    """The Values table of the chart's README: key → default cell."""
    text = (CHART / "README.md").read_text()
    section = text.split("\n## Values\n", 1)[1]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            key, default = match.group(1), match.group(2)
            assert key not in rows, f"{key} is documented twice"
            rows[key] = default
    assert rows, "the chart README has no Values table"
    return rows


def rendered(value):
    """How the README writes a scalar or empty default."""
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if value == "":
        return '`""`'
    if value == []:
        return "`[]`"
    if value == {}:
        return "`{}`"
    return f"`{value}`"


def test_every_value_is_documented():
    rows = readme_rows()
    missing = [key for key, _ in leaves(values()) if key not in rows]
    assert not missing, f"charts/dask-rs/README.md does not document: {missing}"


def test_the_readme_documents_no_value_the_chart_lacks():
    known = {key for key, _ in leaves(values())}
    unknown = [key for key in readme_rows() if key not in known]
    assert not unknown, f"charts/dask-rs/README.md documents keys values.yaml lacks: {unknown}"


def test_documented_defaults_are_the_chart_defaults():
    rows = readme_rows()
    wrong = []
    for key, value in leaves(values()):
        if key not in rows:
            continue  # reported by test_every_value_is_documented
        if isinstance(value, (list, dict)) and value:
            continue  # a non-empty list or map is described in words
        if rows[key] != rendered(value):
            wrong.append(f"{key}: README {rows[key]}, values.yaml {rendered(value)}")
    assert not wrong, "defaults differ:\n" + "\n".join(wrong)


def test_leaves_walks_maps_and_stops_at_lists_and_free_form_maps():
    tree = {"a": {"b": 1, "c": [], "d": {}}, "operator": {"resources": {"limits": {}}}}
    assert dict(leaves(tree)) == {"a.b": 1, "a.c": [], "a.d": {}, "operator.resources": {"limits": {}}}
