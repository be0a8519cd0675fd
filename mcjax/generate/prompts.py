"""Text prompts from conditions, for the large pretrained models that refine mcLDM images (``mcjax.generate.refine``).

A template names conditions in braces and is split into clauses at its commas. A clause that names a condition not
given drops out with its comma; text in square brackets drops out alone, so the clause can stay::

    "a [{BikeStyle} ]bicycle, {RIM_STYLE front} front wheel, technical drawing on white"
    {"BikeStyle": "BMX"}                  → "a BMX bicycle, technical drawing on white"
    {"RIM_STYLE front": "disc"}           → "a bicycle, disc front wheel, technical drawing on white"

Values are written as given, with underscores as spaces and integral numbers without ".0" ("DIRT_JUMP" → "DIRT
JUMP", "44.0" → "44"). A template without braces is a literal prompt. Commas inside brackets are not supported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from mcjax.conditions import canonical_category
from mcjax.errors import InputError

FIELD = re.compile(r"\{([^{}]+)\}")
OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def template_fields(template: str) -> list[str]:
    """The condition names a template refers to, in order of appearance."""
    return FIELD.findall(template)


def check_template(template: str, names: Sequence[str]) -> None:
    """InputError naming the first field that is not a condition of the run, and the valid ones."""
    for field in template_fields(template):
        if field not in names:
            raise InputError(f"Prompt template field {{{field}}} is not a condition of this run; valid fields: "
                             f"{list(names)}.")


def _is_given(value: object) -> bool:
    return value is not None and str(value).strip() != "" and not (isinstance(value, float) and math.isnan(value))


def _words(value: object) -> str:
    return canonical_category(value).replace("_", " ")


def _fill(text: str, values: Mapping[str, str]) -> str | None:
    """``text`` with its fields filled, or None when one of them is not given."""
    if any(field not in values for field in template_fields(text)):
        return None
    return FIELD.sub(lambda match: values[match.group(1)], text)


def build_prompt(template: str, given: Mapping[str, object], names: Sequence[str]) -> str:
    """The prompt for images generated with the conditions in ``given`` (name → value; absent, None, "" or NaN is not
    given); ``names`` are the run's conditions, against which the template is checked."""
    check_template(template, names)
    values = {name: _words(value) for name, value in given.items() if _is_given(value)}
    clauses = []
    for clause in template.split(","):
        clause = OPTIONAL.sub(lambda match: _fill(match.group(1), values) or "", clause)
        filled = _fill(clause, values)
        if filled is not None and filled.strip():
            clauses.append(" ".join(filled.split()))
    return ", ".join(clauses)


def resolve_template(prompt: str | None, template: str, names: Sequence[str]) -> str:
    """The template to use: ``prompt`` (e.g. ``sample.py --prompt``) when given, else the run's template; an empty
    one is an InputError that says how to set it."""
    chosen = prompt if prompt else template
    if not chosen or not chosen.strip():
        raise InputError("No prompt for the refiner: this run's config has no refine.prompt_template; pass --prompt "
                         "'a [{NAME} ]...' (fields in braces are conditions; docs/mcldm.md, Refining).")
    check_template(chosen, names)
    return chosen


def config_template(config) -> str:
    """The run's ``config.refine.prompt_template``; a run trained before that field existed gets the template of the
    config file with the same conditions (GeoBiked, DVM-Car), else "" (then ``--prompt`` is needed)."""
    if "refine" in config and "prompt_template" in config.refine:
        return config.refine.prompt_template
    from mcjax.configs import dvm_ldm, geobiked_ldm

    names = {*config.data.get("categorical_columns", ()), *config.data.get("numerical_columns", ())}
    for module in (geobiked_ldm, dvm_ldm):
        default = module.get_config()
        if names == {*default.data.categorical_columns, *default.data.numerical_columns}:
            return default.refine.prompt_template
    return ""
