"""A searchable numeric range, as the config writes it: ``{low, high[, step]}`` or ``{values: [...]}``."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Range(BaseModel):
    """``{low, high[, step]}`` or an explicit ``{values: [...]}``."""

    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    values_: Optional[list[float]] = Field(None, alias="values")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.values_ is not None:
            if not self.values_:
                raise ValueError("the values list is empty")
            if (self.low, self.high) not in ((None, None), (min(self.values_), max(self.values_))):
                raise ValueError("give either a values list or low/high, not both")
            object.__setattr__(self, "low", min(self.values_))
            object.__setattr__(self, "high", max(self.values_))
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs low and high (or values)")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be positive")
        return self

    def values(self) -> list[float]:
        """The grid points: the explicit values, or low..high by step ([] without a step)."""
        if self.values_ is not None:
            return sorted(self.values_)
        if self.step is None:
            return []
        n = int(round((self.high - self.low) / self.step))
        return [round(self.low + i * self.step, 10) for i in range(n + 1)]
