"""Per-class Dice (background excluded) and HECKTOR aggregated Dice, as an `evaluate` metric module.

Load offline with `unicon_hf.metrics.load_metric("dice")`. Each example is one case's label map,
flattened (`label_map.ravel()`): Dice does not depend on geometry, and a flat list keeps the Arrow
feature simple for volumes of any shape. The arithmetic is `unicon_hf.training.metrics.SegmentationMetrics`
(MONAI `DiceMetric(include_background=False)` per case, plus the aggregated sums), tested there.
"""

import datasets
import evaluate
import numpy as np

from unicon_hf.training.metrics import SegmentationMetrics

_DESCRIPTION = """Dice per foreground class (label 0 = background is never scored). `dice` is the mean
over cases of each case's Dice, skipping cases whose ground truth lacks the class; `aggregated_dice`
is HECKTOR 2022's sum over cases of 2|A∩B| divided by the sum of |A|+|B|, so false positives in empty
cases count."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): one flattened predicted label map per case.
    references (`list` of `list` of `int`): one flattened ground-truth label map per case (same length).
    class_names (`list` of `str`): names of labels 1..K, e.g. ["GTVp", "GTVn"].
Returns:
    dice, aggregated_dice (`dict` name -> `float`), dice_mean, aggregated_dice_mean (`float`),
    num_cases (`int`), notes (`list` of `str`: why any value is NaN or skips cases).
Example:
    >>> metric = load_metric("dice")
    >>> metric.compute(predictions=[[0, 1, 1, 0]], references=[[0, 1, 0, 0]], class_names=["GTVp"])["dice_mean"]
    0.666...
"""

_CITATION = """@inproceedings{andrearczyk2022overview,
  title={Overview of the HECKTOR Challenge at MICCAI 2022: Automatic Head and Neck Tumor Segmentation
         and Outcome Prediction in PET/CT},
  author={Andrearczyk, Vincent and others}, booktitle={HECKTOR 2022, LNCS 13626}, year={2023}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Dice(evaluate.Metric):
    """Per-class and aggregated Dice (see module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, class_names=("foreground",)):
        acc = SegmentationMetrics(list(class_names), hd95=False)
        for case, (pred, ref) in enumerate(zip(predictions, references)):
            pred, ref = np.asarray(pred), np.asarray(ref)
            if pred.shape != ref.shape:
                raise ValueError(f"dice: case {case} has {pred.size} predicted and {ref.size} reference voxels")
            # (B, D, H, W) with a 1x1 in-plane: geometry is irrelevant to Dice.
            acc.update(pred.reshape(1, -1, 1, 1), ref.reshape(1, -1, 1, 1))
        return acc.compute()
