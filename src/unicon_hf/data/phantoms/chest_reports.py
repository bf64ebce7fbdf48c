"""CT-RATE's 18 findings and the radiology-report sentences the chest phantoms are described with.

Kept apart from the renderer so the default tokenizer corpus can reuse the exact sentence templates.
"""

from __future__ import annotations

import numpy as np

FINDINGS = [
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion", "Mosaic attenuation pattern",
    "Peribronchial thickening", "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
]
# Findings the chest phantom draws in the image; the others are always absent (label 0).
RENDERED = [
    "Lung nodule", "Pleural effusion", "Cardiomegaly", "Emphysema", "Consolidation", "Pericardial effusion",
    "Arterial wall calcification", "Lymphadenopathy", "Coronary artery wall calcification", "Medical material",
    "Lung opacity", "Atelectasis",
]

# Positive sentences: several phrasings each, with {size} (mm), {lobe} or {side} slots.
POSITIVE = {
    "Lung nodule": ["There is a {size} mm nodule in the {lobe}.", "A {size} mm solid nodule is seen in the {lobe}."],
    "Pleural effusion": ["{Side} pleural effusion is present.",
                         "Pleural effusion is seen on the {side} side, measuring {size} mm in thickness."],
    "Cardiomegaly": ["The heart is enlarged (cardiomegaly).", "Cardiomegaly is present."],
    "Pericardial effusion": ["Pericardial effusion is present, measuring {size} mm in thickness.",
                             "There is pericardial effusion."],
    "Emphysema": ["Emphysematous changes are present in both lungs, predominantly in the upper lobes.",
                  "Centrilobular and bullous emphysema is seen in both lungs."],
    "Consolidation": ["There is a consolidation area in the {lobe}.", "Consolidation is seen in the {lobe}."],
    "Arterial wall calcification": ["Calcific atherosclerotic plaques are seen in the aortic wall.",
                                    "There are calcifications in the wall of the thoracic aorta."],
    "Coronary artery wall calcification": ["Calcification is observed in the coronary artery walls.",
                                           "Coronary artery wall calcifications are present."],
    "Lymphadenopathy": ["Enlarged lymph nodes are seen in the mediastinum, the largest measuring {size} mm in short axis.",
                        "Mediastinal lymphadenopathy is present, the largest node measuring {size} mm."],
    "Medical material": ["A cardiac pacemaker is present in the left anterior chest wall, with its lead extending into the heart."],
    "Lung opacity": ["A ground-glass opacity is seen in the {lobe}.", "There is a ground-glass density in the {lobe}."],
    "Atelectasis": ["Subsegmental atelectasis is present in the {lobe}.", "Linear atelectasis is seen in the {lobe}."],
}
# Negative sentences: radiology reports state some negatives and leave others unsaid.
NEGATIVE = {
    "Lung nodule": ["No nodule was detected in either lung.", "No pulmonary nodule was observed."],
    "Pleural effusion": ["No pleural effusion was detected."],
    "Cardiomegaly": ["Heart size is normal.", "Heart contour and size are normal."],
    "Pericardial effusion": ["No pericardial effusion was detected."],
    "Emphysema": ["No emphysema was observed."],
    "Consolidation": ["No consolidation was detected in the lung parenchyma."],
    "Arterial wall calcification": ["No calcification was observed in the aortic wall."],
    "Coronary artery wall calcification": ["No coronary artery calcification was detected."],
    "Lymphadenopathy": ["No mediastinal lymphadenopathy was detected.", "Mediastinal lymph nodes are of normal size."],
    "Lung opacity": ["No ground-glass opacity was seen."],
    "Atelectasis": ["No atelectasis was seen."],
}
IMPRESSION = {
    "Lung nodule": "{size} mm nodule in the {lobe}.",
    "Pleural effusion": "{Side} pleural effusion.",
    "Cardiomegaly": "Cardiomegaly.",
    "Pericardial effusion": "Pericardial effusion.",
    "Emphysema": "Emphysema.",
    "Consolidation": "Consolidation in the {lobe}.",
    "Arterial wall calcification": "Aortic atherosclerosis.",
    "Coronary artery wall calcification": "Coronary artery calcification.",
    "Lymphadenopathy": "Mediastinal lymphadenopathy.",
    "Medical material": "Cardiac pacemaker.",
    "Lung opacity": "Ground-glass opacity in the {lobe}.",
    "Atelectasis": "Atelectasis in the {lobe}.",
}
NORMAL_SENTENCES = [
    "Trachea and both main bronchi are open.",
    "The mediastinal main vascular structures are of normal width.",
    "Bone structures within the imaging area are natural.",
    "No lytic or destructive lesion was detected in the bone structures.",
]
NO_FINDINGS_IMPRESSION = "No significant pathology was detected in the thorax."
CLINICAL_INFORMATION = ["Not given.", "Cough.", "Shortness of breath.", "Chest pain.", "Routine control.", "Fever and cough."]
LOBES = ["right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe"]
SIDES = ["right", "left", "bilateral"]


def _fill(template: str, slots: dict) -> str:
    side = slots.get("side", "")
    return template.format(Side=side.capitalize(), **{k: v for k, v in slots.items()})


def write_report(present: dict[str, dict], rng: np.random.Generator) -> tuple[str, str]:
    """Findings and impression text for one case.

    Args:
        present: finding name -> slot values ({"size": 12, "lobe": ..., "side": ...}) for every
            finding drawn in the image.
        rng: generator choosing phrasings and which negatives are stated.
    """
    sentences = [NORMAL_SENTENCES[0]]
    impression = []
    for name in RENDERED:
        if name in present:
            templates = POSITIVE[name]
            sentences.append(_fill(templates[int(rng.integers(len(templates)))], present[name]))
            impression.append(_fill(IMPRESSION[name], present[name]))
        elif name in NEGATIVE and rng.random() < 0.6:
            templates = NEGATIVE[name]
            sentences.append(templates[int(rng.integers(len(templates)))])
    sentences.extend(NORMAL_SENTENCES[1:3] if rng.random() < 0.5 else NORMAL_SENTENCES[1:])
    return " ".join(sentences), " ".join(impression) if impression else NO_FINDINGS_IMPRESSION


def sentence_corpus() -> list[str]:
    """Every phrasing the chest reports can use, with representative slot values (tokenizer corpus)."""
    texts = list(NORMAL_SENTENCES) + [NO_FINDINGS_IMPRESSION] + list(CLINICAL_INFORMATION)
    for index, name in enumerate(RENDERED):
        slots = {"size": 6 + 3 * index, "lobe": LOBES[index % len(LOBES)], "side": SIDES[index % len(SIDES)]}
        texts += [_fill(t, slots) for t in POSITIVE[name]]
        texts += NEGATIVE.get(name, [])
        texts.append(_fill(IMPRESSION[name], slots))
    return texts
