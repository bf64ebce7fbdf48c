"""Harrell's concordance index for right-censored survival, as an `evaluate` metric module.

Load offline with `unicon_hf.metrics.load_metric("c_index")` (or `evaluate.load(<this folder>)`).
The arithmetic lives in `unicon_hf.training.metrics.concordance_index` (tested there).
"""

import datasets
import evaluate

from unicon_hf.training.metrics import concordance_index

_DESCRIPTION = """Harrell's C-index: among comparable pairs (one case has the event before the other's
follow-up ends), the fraction where the earlier event has the higher predicted risk; risk ties count
0.5. An event and a censoring at the same time are comparable (event first); two events at the same
time are not (scikit-survival's convention)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted risk (higher = earlier event).
    references (`list` of `float`): observed time (event or censoring), e.g. RFS in days.
    events (`list` of `int`): 1 = event observed (e.g. relapse), 0 = censored.
    tied_tol (`float`, optional, defaults to 1e-8): risk differences at or below this are ties.
Returns:
    c_index (`float`): NaN when no pair is comparable.
    comparable (`int`), concordant (`int`), tied_risk (`int`): pair counts.
Example:
    >>> metric = load_metric("c_index")
    >>> metric.compute(predictions=[3, 2, 1], references=[1, 2, 3], events=[1, 1, 0])["c_index"]
    1.0
"""

_CITATION = """@article{harrell1996multivariable,
  title={Multivariable prognostic models: issues in developing models, evaluating assumptions and
         adequacy, and measuring and reducing errors},
  author={Harrell, Frank E and Lee, Kerry L and Mark, Daniel B},
  journal={Statistics in Medicine}, volume={15}, number={4}, pages={361--387}, year={1996}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CIndex(evaluate.Metric):
    """Harrell's C-index (see module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("float64"),
                    "references": datasets.Value("float64"),
                    "events": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, events, tied_tol=1e-8):
        out = concordance_index(predictions, references, events, tied_tol=tied_tol)
        return {k: out[k] for k in ("c_index", "comparable", "concordant", "tied_risk")}
