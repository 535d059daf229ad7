from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints

from service.cards.schemas import NulFree
from service.common import Name as _Name
from service.common import Strict
from service.common import Text as _Text

Name = Annotated[_Name, NulFree]
Text = Annotated[_Text, NulFree]

Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40), NulFree]


class MerchantCreate(Strict):
    name: Name
    uscc: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
    category: Category


class ClosureRequest(Strict):
    effective_date: datetime
    reason: Text


class ReasonRequest(Strict):
    reason: Text


class ListFlagRequest(Strict):
    """Set (`listed: true`) or lift (`listed: false`) the abnormal-operation list or a delisting."""

    listed: bool
    reason: Text | None = None
