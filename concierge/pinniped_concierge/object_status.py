"""A custom object's `status`, read with the model the concierge writes it with."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from pinniped_concierge.kubeapi import Obj

Status = TypeVar("Status", bound=BaseModel)


def read_status(obj: Obj, model: type[Status]) -> Status | None:
    """The object's status; None when it has none, or one we cannot read (then it is
    written anew)."""
    status = obj.get("status")
    if not isinstance(status, dict):
        return None
    try:
        return model.model_validate(status, by_alias=True, by_name=False)
    except ValidationError:
        return None
