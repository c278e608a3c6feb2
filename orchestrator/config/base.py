"""What every section of the configuration's schema shares: refusing unknown keys
and loose types, and raising problems at the key they are about."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..model import NAME, NAME_RULE
from .yamlmap import Loc

# -- problems ---------------------------------------------------------------------


def show(value: Any) -> str:
    """A value as a message quotes it (cut short)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problem(message: str) -> PydanticCustomError:
    """An error whose message is ``message`` as it is (type ``config``)."""
    return PydanticCustomError("config", "{message}", {"message": message})


def details(problems: tuple[tuple[Loc, str, Any], ...]) -> list[InitErrorDetails]:
    return [InitErrorDetails(type=problem(m), loc=loc, input=value) for loc, m, value in problems]


def fail(*problems: tuple[Loc, str, Any]) -> ValidationError:
    """Errors at keys below the model or field being validated:
    ``(loc, message, value)`` each."""
    return ValidationError.from_exception_data("config", details(problems))


def again(err: ValidationError) -> list[InitErrorDetails]:
    """``err``'s errors, to be raised again with more (type, key and message kept)."""
    return [
        InitErrorDetails(
            type=PydanticCustomError(e["type"], "{message}", {"message": e["msg"]}),
            loc=tuple(e["loc"]),
            input=e.get("input"),
        )
        for e in err.errors(include_url=False)
    ]


def names_of(names: Any) -> str:
    """``a, b, c``: sorted, for messages."""
    return ", ".join(sorted(names))


def none_is_empty_dict(value: Any) -> Any:
    return {} if value is None else value


def none_is_empty_list(value: Any) -> Any:
    return [] if value is None else value


def _name(value: Any) -> str:
    if not isinstance(value, str) or NAME.fullmatch(value) is None:
        raise problem(f"must be {NAME_RULE}, got {show(value)}")
    return value


Name = Annotated[str, PlainValidator(_name)]  # the one name rule (orchestrator.model)


class Section(BaseModel):
    """A mapping of the file: unknown keys refused, values of the YAML types only
    (no "2" for 2, no 1 for true), numbers finite; an empty section is the defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, data: Any) -> Any:
        return {} if data is None else data
