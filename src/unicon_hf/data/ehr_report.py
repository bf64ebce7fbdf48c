"""Clinical EHR fields -> the report-like text the paper feeds to the text encoder for prognosis.

UNICON rewrites each patient's tabular clinical record into a short report with three sections
("Clinical summary:", "TNM staging:", "Conclusion:") so a BERT text encoder can read it. The paper
used an LLM for that rewrite; here the default is a deterministic template (same record -> same
text, no model needed) and `rewriter` plugs an LLM (or anything else) in instead.

Only whitelisted clinical fields are read. Outcome columns (`Relapse`, `RFS`, `time`, `death`, ...)
and the centre are never put in the text: the report is a model *input* for predicting the outcome.
Column names are matched loosely (case, spaces, dashes, underscores ignored), so the HECKTOR 2022
table, the lifelines larynx table (`age`, `stage` or one-hot `Stage_II..IV`, `diagyr`) and similar
tables all work; missing or unknown values are reported as "not reported".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

from ..errors import UserInputError

Rewriter = Callable[[Mapping, str], str]

# Normalised column name -> field; a trailing "*" matches any name starting with the prefix.
_ALIASES = {
    "age": ["age", "ageatdiagnosis"],
    "sex": ["gender", "sex"],
    "weight": ["weight", "weightkg"],
    "tobacco": ["tobacco", "smoking", "smoker"],
    "alcohol": ["alcohol"],
    "performance": ["performancestatus", "ecog", "ecogperformancestatus"],
    "hpv": ["hpv*", "p16*"],
    "surgery": ["surgery"],
    "chemotherapy": ["chemotherapy", "chemo"],
    "t": ["tstage", "t", "tcategory"],
    "n": ["nstage", "n", "ncategory"],
    "m": ["mstage", "m", "mcategory"],
    "group": ["tnmgroup", "stagegroup", "overallstage", "stage", "tnmstage"],
    "diagnosis_year": ["diagyr", "diagnosisyear", "yearofdiagnosis"],
}
_ONE_HOT_STAGE = {"stagei": "I", "stageii": "II", "stageiii": "III", "stageiv": "IV"}
_UNKNOWN = {"", "na", "nan", "none", "null", "unknown", "unk", "missing", "?", "-1"}
_ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV"}
_TRUE = {"1", "1.0", "yes", "y", "true", "positive", "pos", "+", "current", "former"}
_FALSE = {"0", "0.0", "no", "n", "false", "negative", "neg", "-", "never"}


def _norm(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _value(value):
    """None for missing/unknown values; otherwise the value as a stripped string."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return None if text.lower() in _UNKNOWN else text


def _fields(record: Mapping) -> dict[str, str | None]:
    by_name = {_norm(key): record[key] for key in record.keys()}
    fields: dict[str, str | None] = {}
    for field, aliases in _ALIASES.items():
        fields[field] = None
        for alias in aliases:
            if alias.endswith("*"):
                hits = [v for k, v in by_name.items() if k.startswith(alias[:-1])]
                value = _value(hits[0]) if hits else None
            else:
                value = _value(by_name.get(alias))
            if value is not None:
                fields[field] = value
                break
    if fields["group"] is None:
        # One-hot stage columns (lifelines' larynx table): all zero means stage I.
        one_hot = {_ONE_HOT_STAGE[k]: _value(v) for k, v in by_name.items() if k in _ONE_HOT_STAGE}
        if one_hot and all(v is not None for v in one_hot.values()):
            chosen = [stage for stage, v in one_hot.items() if _flag(v)]
            fields["group"] = chosen[-1] if chosen else "I"
    return fields


def _flag(text: str | None) -> bool | None:
    if text is None:
        return None
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def _number(text: str | None) -> str | None:
    """'63.0' -> '63', '78.50' -> '78.5'; non-numbers are returned unchanged."""
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:g}" if not number.is_integer() else str(int(number))


def _stage_group(text: str | None) -> str | None:
    if text is None:
        return None
    group = re.sub(r"(?i)^stage\s*", "", text).strip()
    group = _number(group) or group
    return _ROMAN.get(group, group.upper())


def _category(prefix: str, text: str | None) -> str | None:
    """'3' -> 'T3', 't4a' -> 'T4a', 'T2' -> 'T2' for the T/N/M categories."""
    if text is None:
        return None
    text = _number(text) or text
    if text[:1].upper() == prefix:
        return prefix + text[1:]
    return prefix + text


def _sex_word(text: str | None) -> str | None:
    if text is None:
        return None
    lowered = text.lower()
    if lowered in {"m", "male", "man"}:
        return "man"
    if lowered in {"f", "female", "woman"}:
        return "woman"
    return None


def deterministic_report(record: Mapping) -> str:
    """The template rewrite of one clinical record (see the module docstring)."""
    f = _fields(record)
    age, sex = _number(f["age"]), _sex_word(f["sex"])
    who = f"{age}-year-old {sex or 'patient'}" if age else (f"{sex.capitalize()}, age not reported" if sex else "Patient, age not reported")
    summary = [f"{who[0].upper()}{who[1:]}."]
    if f["sex"] is not None and sex is None:
        summary.append(f"Sex recorded as {f['sex']}.")
    if f["diagnosis_year"] is not None:
        year = _number(f["diagnosis_year"])
        summary.append(f"Diagnosed in {'19' + year if len(year) == 2 else year}.")
    if f["weight"] is not None:
        summary.append(f"Weight {_number(f['weight'])} kg.")
    habits = []
    for field, word in (("tobacco", "Tobacco use"), ("alcohol", "Alcohol use")):
        flag = _flag(f[field])
        habits.append(f"{word}: {'yes' if flag else 'no' if flag is False else (f[field] or 'not reported')}.")
    summary += habits
    if f["performance"] is not None:
        summary.append(f"ECOG performance status {_number(f['performance'])}.")
    hpv = _flag(f["hpv"])
    summary.append(f"HPV status: {'positive' if hpv else 'negative' if hpv is False else 'not reported'}.")
    treatments = [name for name in ("surgery", "chemotherapy") if _flag(f[name])]
    declined = [name for name in ("surgery", "chemotherapy") if _flag(f[name]) is False]
    if treatments:
        summary.append(f"Treated with {' and '.join(treatments)}" + (f", without {declined[0]}." if declined else "."))
    elif declined:
        summary.append(f"No {' or '.join(declined)}.")

    t, n, m = _category("T", f["t"]), _category("N", f["n"]), _category("M", f["m"])
    group = _stage_group(f["group"])
    tnm = [f"Primary tumour {t}." if t else "Primary tumour category not reported.",
           f"Regional nodes {n}." if n else "Regional node category not reported.",
           f"Distant metastasis {m}." if m else "Distant metastasis category not reported.",
           f"Overall stage {group}." if group else "Overall stage not reported."]

    metastatic = (m is not None and m.upper().startswith("M1")) or (group is not None and group.startswith("IVC"))
    if metastatic:
        extent = "Metastatic disease"
    elif group is None:
        extent = "Disease of unreported stage"
    elif group in {"0", "I", "II"}:
        extent = "Early-stage disease"
    else:
        extent = "Advanced disease"
    conclusion = f"{extent}" + (f" (stage {group})" if group else "")
    if hpv is not None:
        conclusion += f", HPV-{'positive' if hpv else 'negative'}"
    conclusion += f", in a {age}-year-old {sex or 'patient'}." if age else "."
    return (
        "Clinical summary: " + " ".join(summary) + "\n"
        + "TNM staging: " + " ".join(tnm) + "\n"
        + "Conclusion: " + conclusion
    )


def ehr_to_report(record: Mapping, rewriter: Rewriter | None = None) -> str:
    """Rewrite one clinical EHR record into report-like text ("Clinical summary:", "TNM staging:", "Conclusion:").

    Args:
        record: the patient's clinical fields (a dict, a `datasets` row, a pandas Series, ...), e.g.
            one row of the HECKTOR clinical CSV. Unknown or empty values are allowed.
        rewriter: optional callable `(record, deterministic_text) -> text` (e.g. an LLM prompt) whose
            result replaces the deterministic text.

    Returns:
        The report text. Deterministic when `rewriter` is None.
    """
    if not hasattr(record, "keys"):
        raise UserInputError(f"ehr_to_report needs a mapping of column -> value, got {type(record).__name__}")
    text = deterministic_report(record)
    if rewriter is None:
        return text
    rewritten = rewriter(record, text)
    if not isinstance(rewritten, str) or not rewritten.strip():
        raise UserInputError(
            f"the EHR rewriter {getattr(rewriter, '__name__', rewriter)!r} returned {rewritten!r}; it must return "
            "non-empty report text"
        )
    return rewritten


__all__ = ["ehr_to_report", "deterministic_report", "Rewriter"]
