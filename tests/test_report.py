"""Reports: figures, self-contained HTML, LaTeX tables, regeneration, published numbers.

Most tests use a fake run directory written straight into a ResultsStore with
artefact files (no model is fitted); one runs a real tiny grid.
"""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import multivariate_normal

import datasets
import methods
from harness.config import Config
from harness.evaluate import grid_log_density
from harness.report import TABLES, build, latex, markdown, write_report
from harness.report.figures_samples import chosen_dims, correlated_pairs
from harness.report.styles import method_styles
from harness.store import ResultsStore

NO_LIKELIHOOD = {"gan", "training_free_ode"}


class _Gaussian:
    """Just enough of a method for ``grid_log_density`` (which scores the grid by ``figure_log_prob``): a
    Gaussian fitted to data."""

    log_prob_kind = "exact"

    def __init__(self, x: np.ndarray) -> None:
        self.dist = multivariate_normal(x.mean(0), np.cov(x, rowvar=False))

    def figure_log_prob(self, x: np.ndarray) -> np.ndarray:
        return self.dist.logpdf(x)


def _metrics(method: str, k: int, seed: int, dim: int) -> tuple[dict, dict]:
    lik = method not in NO_LIKELIHOOD
    metrics = {
        "kind": "exact" if lik else None,
        "mmd2": 0.01 * (k + 1) + 0.001 * seed,
        "c2st_accuracy": 0.55 + 0.02 * k,
        "energy_distance": 0.02 * (k + 1),
        "sliced_wasserstein": 0.1 * (k + 1),
        "marginal_kl": 0.01 * (k + 2),
        "marginal_kl_per_dim": [0.01] * dim,
    }
    if lik:
        metrics.update(test_loglik=-3.0 + 0.1 * k - 0.01 * seed, test_loglik_se=0.01, kl=0.2 + 0.1 * k, kl_se=0.01)
    timings = {
        "fit_s": 1.0 + k,
        "fit_phases": {"training": 0.8 + k},
        "samples_per_s": 1e3 * 10 ** (k % 4) * (1 + seed),
        "sample_s": 0.1,
        "peak_rss_mib": 500.0,
    }
    if lik:
        timings["log_prob_per_s"] = 5e4
    return metrics, timings


def make_fake_run(
    run_dir: Path,
    methods: list[str],
    dsets: list[str],
    seeds: list[int],
    failed: tuple[str, str] | None = None,
    data_root: str | None = None,
) -> Path:
    """A run directory as run_grid would leave it, with made-up metrics and real-shaped artefacts."""
    store = ResultsStore(run_dir)
    store.set_meta(
        "config", Config(methods=methods, datasets=dsets, seeds=seeds, profile="smoke", data_root=data_root).to_dict()
    )
    store.set_meta("environment", {"device": "cpu", "python": "3.11", "torch": "2.13.0", "code_version": "0.1.0+test"})
    (run_dir / "artifacts").mkdir(exist_ok=True)
    for ds_name in dsets:
        for seed in seeds:
            splits = datasets.get(ds_name).load(seed=seed, root=data_root)
            for k, m in enumerate(methods):
                key = f"{m}-{ds_name}-{seed}"
                row = {
                    "cell_key": key,
                    "method": m,
                    "dataset": ds_name,
                    "seed": seed,
                    "profile": "smoke",
                    "params": {},
                    "device": "cpu",
                    "code_version": "0.1.0+test",
                    "config_hash": "abc",
                }
                if (m, ds_name) == failed:
                    store.put(
                        {
                            **row,
                            "status": "failed",
                            "error": "RuntimeError: boom <in> fit & co",
                            "metrics": {},
                            "timings": {},
                            "info": {},
                        }
                    )
                    continue
                metrics, timings = _metrics(m, k, seed, splits.dim)
                store.put({**row, "status": "ok", "error": None, "metrics": metrics, "timings": timings, "info": {}})
                rng = np.random.default_rng([k, seed])
                arrays = {
                    "samples": (splits.test[:2000] + 0.05 * k * rng.standard_normal(splits.test[:2000].shape)).astype(
                        np.float32
                    )
                }
                if splits.dim == 2 and m not in NO_LIKELIHOOD:
                    arrays.update(grid_log_density(_Gaussian(splits.train), splits.test))
                np.savez_compressed(run_dir / "artifacts" / f"{key}.npz", **arrays)
    store.close()
    return run_dir


class _PageParser(HTMLParser):
    """Collects tags, table headings, image sources and checks that tags nest."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_h3 = False
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag == "table":
            self.tables += 1
        if tag == "h3":
            self._in_h3 = True
            self.headings.append("")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag == "h3":
            self._in_h3 = False
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self._in_h3:
            self.headings[-1] += data


METHODS = ["gaussian", "kde", "gan"]
DSETS = ["8gaussians", "pinwheel"]


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    run_dir = make_fake_run(tmp_path_factory.mktemp("fake"), METHODS, DSETS, [0, 1], failed=("kde", "pinwheel"))
    write_report(run_dir, formats=("md", "csv", "html", "latex"))
    return run_dir


def test_every_figure_is_written_and_linked(fake_run):
    figs = sorted(p.name for p in (fake_run / "figures").glob("*.png"))
    assert figs == ["fig_density_2d.png", "fig_samples_2d.png", "fig_speed_quality.png"]
    for name in figs:
        assert (fake_run / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (fake_run / "report.md").read_text()
    assert "## Figures" in md
    for name in figs:
        assert f"](figures/{name})" in md


def test_html_is_self_contained_and_complete(fake_run):
    page = (fake_run / "report.html").read_text()
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    assert not parser.errors and not parser.stack[1:], (parser.errors, parser.stack)
    assert len(parser.images) == 3 and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from the network
    data = build(ResultsStore(fake_run, create=False).rows())
    for table in data.tables:
        assert table.spec.title in parser.headings
    assert parser.tables >= len(data.tables) + 2  # + config and environment
    # failed cells are listed with their (escaped) error
    assert "boom &lt;in&gt; fit &amp; co" in page and 'id="failed"' in page
    config = page.split('id="configuration"')[1].split('id="tables"')[0]
    assert "sample_size" in config and "pinwheel" in config and "0.1.0+test" in config and "2.13.0" in config


def test_html_cells_match_markdown(fake_run):
    md = (fake_run / "report.md").read_text()
    page = (fake_run / "report.html").read_text()
    # every mean ± std entry of the Markdown tables appears in the HTML
    entries = set(re.findall(r"-?\d+\.\d+ ± \d+\.\d+", md))
    assert entries and all(e in page for e in entries)
    after_verdict = md.split("## Summary")[1]  # the verdict's bold quantity names are not entries
    assert page.count('class="best"') == after_verdict.count("**") // 2 - after_verdict.count("**fig_")


def test_regenerating_gives_identical_tables(fake_run):
    md, tex = (fake_run / "report.md").read_text(), (fake_run / "report.tex").read_text()
    write_report(fake_run, formats=("md", "latex"))
    assert (fake_run / "report.md").read_text() == md
    assert (fake_run / "report.tex").read_text() == tex
    rows = ResultsStore(fake_run, create=False).rows()
    assert latex(rows, ResultsStore(fake_run, create=False).meta()) == tex
    assert (
        markdown(
            rows,
            ResultsStore(fake_run, create=False).meta(),
            figures=["figures/fig_samples_2d.png", "figures/fig_density_2d.png", "figures/fig_speed_quality.png"],
        )
        == md
    )


def _tabulars(tex: str) -> list[tuple[str, list[str]]]:
    return [
        (m.group(1), m.group(2).strip().splitlines())
        for m in re.finditer(r"\\begin\{tabular\}\{(\w+)\}\n(.*?)\\end\{tabular\}", tex, re.S)
    ]


def test_latex_is_well_formed(fake_run):
    tex = (fake_run / "report.tex").read_text()
    unescaped = re.sub(r"\\[{}]", "", tex)
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    envs = re.findall(r"\\(begin|end)\{(\w+)\}", tex)
    stack = []
    for kind, name in envs:
        if kind == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert not stack
    tabulars = _tabulars(tex)
    data = build(ResultsStore(fake_run, create=False).rows())
    assert len(tabulars) == len(data.tables)
    for align, lines in tabulars:
        body = [ln for ln in lines if ln.endswith(r"\\")]
        assert body and all(re.sub(r"\\&", "", ln).count("&") == len(align) - 1 for ln in body)
    assert r"nsf\_ar" not in tex and r"\textbf{\boldmath$" in tex and r"\pm" in tex
    assert re.search(r"failed\\textsuperscript\{1\}", tex) and r"boom \textless{}in\textgreater{} fit \& co" in tex


def test_latex_marks_the_best_entry_per_dataset(fake_run):
    tex = (fake_run / "report.tex").read_text()
    loglik = tex.split(r"\label{tab:test-loglik}")[1].split(r"\end{tabular}")[0]
    rows = {ln.split(" & ")[0]: ln.split(" & ")[1:] for ln in loglik.splitlines() if ln.endswith(r"\\")}
    # kde (k=1) has the higher fake log-likelihood on 8gaussians; gan has none
    assert rows["kde"][0].startswith(r"\textbf{") and not rows["gaussian"][0].startswith(r"\textbf{")
    assert rows["gan"][0] == "n/a"
    assert rows["kde"][1].startswith("failed")


def test_method_colours_come_from_the_methods_and_are_stable(monkeypatch):
    """A method's declared ``plot_style`` is its style everywhere; the others (here two names no method
    has) get distinct styles that do not depend on which declared methods are in the report."""
    declared = {"gaussian": ("#7f7f7f", ">"), "kde": ("#000080", "*"), "maf": ("#1f77b4", "s")}
    for name, style in declared.items():
        monkeypatch.setattr(methods.get(name), "plot_style", style, raising=False)
    a = method_styles(["gaussian", "kde", "zeta", "alpha"])
    b = method_styles(["alpha", "zeta", "maf", "kde", "gaussian"])
    assert {m: b[m] for m in declared} == declared
    assert all(a[m] == b[m] for m in a)
    assert len({s[0] for s in b.values()}) == len(b)


def test_chosen_dimensions_follow_correlation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 5))
    x[:, 3] = x[:, 1] + 0.05 * rng.standard_normal(2000)  # strongest pair (1, 3)
    x[:, 4] = -x[:, 0] + 0.5 * rng.standard_normal(2000)  # second pair (0, 4)
    assert correlated_pairs(x) == [(1, 3), (0, 4)]
    assert chosen_dims(x) == [1, 3, 0, 4]
    x[:, 2] = 1.0  # a constant column must not break the choice
    assert correlated_pairs(x)[0] == (1, 3)


def test_published_numbers_are_declared_by_the_datasets_and_plausible():
    for name in ("power", "gas", "hepmass", "miniboone", "bsds300", "miniboone-small"):
        published = datasets.get_class(name).published
        assert len(published) == 7 and all(p.source and p.model and p.method in methods.names() for p in published)
    assert all(-40 < p.value < 1 for p in datasets.get_class("power").published)
    assert all(p.value > 90 for p in datasets.get_class("bsds300").published)
    small = datasets.get_class("miniboone-small")
    assert small.published == datasets.get_class("miniboone").published and "29,556" in small.published_note
    assert datasets.get_class("8gaussians").published == ()


def test_tabular_figure_and_published_table(tmp_path, shared_data_root):
    run_dir = make_fake_run(tmp_path, ["gaussian", "maf"], ["miniboone-small"], [0], data_root=str(shared_data_root))
    paths = write_report(run_dir, formats=("md", "html", "latex"))
    names = {p.name for p in paths}
    assert {"fig_tabular_miniboone-small.png", "fig_speed_quality.png", "report.html"} <= names
    assert "fig_samples_2d.png" not in names
    md = (run_dir / "report.md").read_text()
    assert "Published test log-likelihoods" in md and "Papamakarios et al. 2017 (MAF), Table 1" in md
    assert "-11.75" in md and "Note on miniboone-small" in md  # MAF (5) on MINIBOONE, with the caveat
    assert "Published test log-likelihoods" in (run_dir / "report.html").read_text()


def test_missing_artefacts_and_data_do_not_break_the_report(tmp_path):
    run_dir = make_fake_run(tmp_path, ["gaussian"], ["8gaussians"], [0])
    shutil.rmtree(run_dir / "artifacts")
    paths = write_report(run_dir)
    assert {p.name for p in paths} >= {"report.md", "report.html", "results.csv", "fig_samples_2d.png"}


def test_real_tiny_run_writes_html_and_figures(tmp_path):
    """About 12 s on 2 idle cores (mostly imports and the sample metrics), not in the report itself."""
    from harness.runner import run_grid

    cfg = Config(methods=["gaussian", "kde"], datasets=["8gaussians"], seeds=[0], profile="smoke", sample_size=200)
    run_grid(cfg, tmp_path, isolate=False, progress=False)
    paths = write_report(tmp_path)
    assert [p.name for p in paths][-1] == "report.html"
    assert {"fig_samples_2d.png", "fig_density_2d.png", "fig_speed_quality.png"} <= {p.name for p in paths}
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "Test log-likelihood" in page


def test_table_specs_have_unique_keys():
    assert len({t.key for t in TABLES}) == len(TABLES)


def test_every_report_module_stays_under_550_lines():
    folder = Path(__file__).resolve().parents[1] / "harness" / "report"
    lengths = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in folder.glob("*.py")}
    assert max(lengths.values()) < 550, lengths


def test_a_damaged_artefact_is_passed_over_for_the_next_seeds(tmp_path):
    from harness.report.artefacts import RunData
    from harness.store import ARTIFACT_DIR

    folder = tmp_path / ARTIFACT_DIR
    folder.mkdir()
    (folder / "seed0.npz").write_bytes(b"PK\x03\x04" + bytes(200))  # a zip header, then nothing
    np.savez(folder / "seed1.npz", samples=np.ones((3, 2)))
    rows = [
        {"method": "maf", "dataset": "8gaussians", "seed": s, "status": "ok", "cell_key": f"seed{s}"} for s in (0, 1)
    ]
    art = RunData(tmp_path, rows, {}).artifact("maf", "8gaussians")
    assert art is not None and art["samples"].shape == (3, 2)
