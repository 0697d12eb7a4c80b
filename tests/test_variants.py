"""Method variants (harness/variants.py): grammar, expansion, names, runs, resume and bad input."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from harness.__main__ import main
from harness.errors import UserError
from harness.runner import Cell
from harness.store import ResultsStore
from harness.variants import Variant, base_of, expand, expand_all, split_top_level


def names(entry: str) -> list[str]:
    return [v.name for v in expand(entry)]


def test_plain_name_is_one_variant_without_parameters():
    assert expand("kde") == [Variant("kde")] and Variant("kde").name == "kde"


def test_values_after_a_key_expand_and_keys_multiply_in_written_order():
    assert names("a[x=1,2,y=3]") == ["a[x=1,y=3]", "a[x=2,y=3]"]
    assert names("a[y=3,x=1,2]") == ["a[y=3,x=1]", "a[y=3,x=2]"]
    assert len(expand("a[x=1,2,3,y=true,false]")) == 6


def test_values_are_toml_scalars_and_bare_words_are_strings():
    (v,) = expand('a[f=0.05,i=3,b=true,e=1e-3,s=score_model,q="x, y=z"]')
    assert dict(v.params) == {"f": 0.05, "i": 3, "b": True, "e": 0.001, "s": "score_model", "q": "x, y=z"}
    assert all(type(dict(v.params)[k]) is t for k, t in {"f": float, "i": int, "b": bool, "s": str}.items())


@pytest.mark.parametrize(
    "entry", ["a[f=0.05,i=3]", "a[b=false,s=euler]", 'a[q="x, y=z"]', 'a[s="1"]', 'a[s="true"]', "a[e=1e-05]"]
)
def test_names_parse_back_to_the_same_variant(entry):
    for v in expand(entry):
        assert expand(v.name) == [v] and base_of(v.name) == "a"


def test_method_lists_split_outside_brackets_and_duplicates_drop():
    entries = split_top_level("gaussian, sd[eps=0.01,0.05],kde")
    assert entries == ["gaussian", "sd[eps=0.01,0.05]", "kde"]
    assert [v.name for v in expand_all(entries + ["sd[eps=0.05]"])] == [
        "gaussian",
        "sd[eps=0.01]",
        "sd[eps=0.05]",
        "kde",
    ]


@pytest.mark.parametrize(
    "entry, needle",
    [
        ("a[]", "no parameters"),
        ("a[1,x=2]", "must start with param=value"),
        ("a[x=1,x=2]", "twice"),
        ("a[x=]", "empty value"),
        ("a[x=1", "name[param=value"),
        ("a[x=1]b", "name[param=value"),
        ("a[x=@@]", "cannot read the value"),
    ],
)
def test_malformed_variants_are_user_errors(entry, needle):
    with pytest.raises(UserError, match=re.escape(needle)):
        expand(entry)


def test_plain_cells_keep_their_keys_and_variants_get_their_own():
    cell = Cell("gaussian", "8gaussians", 0, "smoke", (), "auto", 300)
    old_spec = ["gaussian", "8gaussians", 0, "smoke", [], "auto", 300]  # the key before variants existed
    assert cell.key == hashlib.sha1(json.dumps(old_spec).encode()).hexdigest()[:16]
    variant = Cell("gaussian", "8gaussians", 0, "smoke", (), "auto", 300, variant=(("ridge", 0.5),))
    assert variant.key != cell.key and variant.name == "gaussian[ridge=0.5]"
    assert variant.params()["ridge"] == 0.5


GRID = [
    "--methods",
    "gaussian,gaussian[ridge=0.5]",
    "--datasets",
    "8gaussians",
    "--seeds",
    "1",
    "--profile",
    "smoke",
    "--sample-size",
    "300",
    "--no-progress",
    "--jobs",
    "1",
]


def test_variants_are_rows_of_their_own_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *GRID, "--out", str(out)]) == 0
    rows = {r["method"]: r for r in ResultsStore(out, create=False).rows()}
    assert set(rows) == {"gaussian", "gaussian[ridge=0.5]"}
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["gaussian[ridge=0.5]"]["params"]["ridge"] == 0.5
    assert rows["gaussian[ridge=0.5]"]["info"]["variant"] == {"method": "gaussian", "params": {"ridge": 0.5}}
    assert "variant" not in rows["gaussian"]["info"]
    # a heavy ridge inflates the covariance: a different, worse model, not a relabelled copy
    ll = {m: r["metrics"]["test_loglik"] for m, r in rows.items()}
    assert ll["gaussian[ridge=0.5]"] < ll["gaussian"] - 0.05
    report = (out / "report.md").read_text()
    assert "| gaussian[ridge=0.5]" in report
    capsys.readouterr()
    assert main(["run", *GRID, "--out", str(out)]) == 0
    assert "2 already done" in capsys.readouterr().out


@pytest.mark.parametrize(
    "methods_arg, needle",
    [
        ("gaussian[rigde=0.5]", "did you mean 'ridge'"),
        ("gaussian[ridge=0.5", "name[param=value"),
        ("gausian[ridge=0.5]", "did you mean 'gaussian'"),
        ("supervised_diffusion[teacher=oracle]", "teacher = 'oracle' is not valid"),
        ("flow_matching[ot=1,solver=euler]", "ot = 1 is not valid"),
    ],
)
def test_bad_variants_exit_2_before_the_grid_runs(methods_arg, needle, tmp_path, capsys):
    out = tmp_path / "x"
    code = main(["run", "--methods", methods_arg, "--datasets", "8gaussians", "--profile", "smoke", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1
    assert not (out / "results.sqlite").exists()


def test_toml_methods_take_variants(tmp_path):
    from harness.config import build, resolve_names

    cfg_file = tmp_path / "v.toml"
    cfg_file.write_text(
        'methods = ["kde", "supervised_diffusion[teacher=training_free,score_model]"]\nprofile = "smoke"\n'
    )
    meths, _, _ = resolve_names(build(str(cfg_file), {}))
    assert [v.name for v in meths] == [
        "kde",
        "supervised_diffusion[teacher=training_free]",
        "supervised_diffusion[teacher=score_model]",
    ]


def test_list_shows_the_variants_of_a_spec(capsys):
    assert main(["list", "--methods", "supervised_diffusion[teacher=score_model,flow_matching]"]) == 0
    out = capsys.readouterr().out
    assert "supervised_diffusion[teacher=score_model]" in out and "supervised_diffusion[teacher=flow_matching]" in out
    assert "'training_free' -> 'score_model'" in out


def test_report_orders_variants_as_the_config_lists_them():
    import pandas as pd

    from harness.report import method_order

    df = pd.DataFrame({"method": ["kde", "sd[t=b]", "sd[t=a]"]})
    assert method_order(df, {"methods": ["sd[t=b,a]", "kde"]}) == ["sd[t=b]", "sd[t=a]", "kde"]
