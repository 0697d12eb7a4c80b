"""Published test log-likelihoods on the MAF benchmark suite, for reference in reports.

Every number is a mean test log-likelihood in nats per example (higher is
better) copied from the table named in its ``source``; error bars are left
out. Only numbers we are sure of are listed; a missing entry means "not
recorded here", not "not published".

Sources:

* MAF: Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for
  Density Estimation", NeurIPS 2017, Table 1 (unconditional density
  estimation). "(5)" and "(10)" are the number of flow layers.
* NSF: Durkan, Bekasov, Murray and Papamakarios, "Neural Spline Flows",
  NeurIPS 2019, Table 1.

``miniboone-small`` is shown against MINIBOONE's published numbers with a note:
the published models were trained on MINIBOONE's 29,556 training rows, while
``miniboone-small`` fits on about 3,000 (MAF's validation rows) and is
evaluated on the same 3,648 test rows.

Example::

    for entry in published_for(["power", "miniboone-small"]):
        entry.method, entry.model, entry.source, entry.values
"""

from __future__ import annotations

from dataclasses import dataclass

MAF_PAPER = "Papamakarios et al. 2017 (MAF), Table 1"
NSF_PAPER = "Durkan et al. 2019 (NSF), Table 1"

#: The MAF-suite datasets, in the papers' column order.
SUITE = ("power", "gas", "hepmass", "miniboone", "bsds300")

#: Our dataset -> (published dataset it is compared with, the caveat shown beside it).
STAND_INS: dict[str, tuple[str, str]] = {
    "miniboone-small": (
        "miniboone",
        "published MINIBOONE numbers: those models were trained on 29,556 rows, miniboone-small fits on "
        "about 3,000 (MAF's validation rows) and tests on the same 3,648 rows, so expect lower values",
    ),
}


@dataclass(frozen=True)
class PublishedResult:
    """One published model's test log-likelihoods (nats) on the MAF suite.

    ``method`` is our registry name of the closest method, ``model`` the
    paper's name for it, ``values`` maps our dataset names to the mean.
    """

    method: str
    model: str
    source: str
    values: dict[str, float]


def _suite(*values: float) -> dict[str, float]:
    return dict(zip(SUITE, values))


PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult("gaussian", "Gaussian", MAF_PAPER, _suite(-7.74, -3.58, -27.93, -37.24, 96.67)),
    PublishedResult("realnvp", "Real NVP (5)", MAF_PAPER, _suite(-0.02, 4.78, -19.62, -13.55, 152.97)),
    PublishedResult("realnvp", "Real NVP (10)", MAF_PAPER, _suite(0.17, 8.33, -18.71, -13.84, 153.28)),
    PublishedResult("maf", "MAF (5)", MAF_PAPER, _suite(0.14, 9.07, -17.70, -11.75, 155.69)),
    PublishedResult("maf", "MAF (10)", MAF_PAPER, _suite(0.24, 10.08, -17.73, -12.24, 154.93)),
    PublishedResult("nsf_ar", "RQ-NSF (AR)", NSF_PAPER, _suite(0.66, 13.09, -14.01, -9.22, 157.31)),
    PublishedResult("nsf_c", "RQ-NSF (C)", NSF_PAPER, _suite(0.64, 13.09, -14.75, -9.67, 157.54)),
)


def reference_dataset(dataset: str) -> str | None:
    """The published dataset that ``dataset`` is compared with, or None."""
    if dataset in SUITE:
        return dataset
    return STAND_INS[dataset][0] if dataset in STAND_INS else None


def comparable_datasets(datasets: list[str]) -> list[str]:
    """Those of ``datasets`` that have published numbers (directly or through a stand-in)."""
    return [d for d in datasets if reference_dataset(d) is not None]


def published_value(entry: PublishedResult, dataset: str) -> float | None:
    """``entry``'s published number for our ``dataset`` (through its stand-in), or None."""
    ref = reference_dataset(dataset)
    return entry.values.get(ref) if ref is not None else None
